"""The galaxy-proxy: an encoder pretrained here on simulated galaxy morphology, saved as a Zoobot-layout file
([0, 1] inputs without mean/std), a stand-in for Zoobot where no Zoobot file is at hand (a proxy, not Zoobot).

Trained once and kept in blindspots-out/zoobot-proxy/<arch>-<key> (key: a hash of `proxy_settings`), so the Zoobot
study (`experiments.zoobot`) and the transfer study (`experiments.transfer`) use one and the same encoder file;
neither study imports the other.

    from experiments.galaxy_proxy import ProxyConfig, ensure_proxy
    path, log = ensure_proxy(ProxyConfig(), torch.device("cpu"))   # pretrained now, resumed, or reused

Rooms: `encoder` (starting points, training loop, pretraining, the encoder file, linear probe), `proxy` (its run
folder, pretraining with a checkpoint per epoch, probe quality).
"""

from .proxy import PRETRAIN_SEED, PROBE_SEED, ProxyConfig, ensure_proxy, epoch_done, probe_quality, proxy_dir, proxy_settings

__all__ = ["ProxyConfig", "PRETRAIN_SEED", "PROBE_SEED", "proxy_settings", "proxy_dir", "ensure_proxy",
           "probe_quality", "epoch_done"]
