"""Download (with network access) a Zoobot encoder and the ImageNet weights of the same architecture through timm's
own download, as the two local files `blindspots zoobot` compares:

    python -m experiments.zoobot.fetch --arch convnext_nano --out weights
    blindspots zoobot --arch convnext_nano --backbones imagenet,zoobot \\
        --zoobot-weights weights/zoobot-convnext_nano.safetensors \\
        --imagenet-weights weights/convnext_nano-imagenet.safetensors

Zoobot publishes convnext_nano, efficientnet_b0, resnet18 and resnet50 (among others) as
`hf_hub:mwalmsley/zoobot-encoder-<arch>`; their inputs are [0, 1] images without mean/std."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["fetch", "command", "main"]


def fetch(arch: str, out: str | Path) -> tuple[Path, Path]:
    """Write zoobot-<arch>.safetensors (the encoder, no head) and <arch>-imagenet.safetensors (timm's default
    ImageNet weights) into `out`; returns their paths."""
    from safetensors.torch import save_file

    from blindspots.models import create_timm_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    zoobot, imagenet = out / f"zoobot-{arch}.safetensors", out / f"{arch}-imagenet.safetensors"
    encoder = create_timm_model(f"hf_hub:mwalmsley/zoobot-encoder-{arch}", pretrained=True, num_classes=0)
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(zoobot))
    model = create_timm_model(arch, pretrained=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(imagenet))
    return zoobot, imagenet


def command(arch: str, zoobot: Path, imagenet: Path) -> str:
    return (f"blindspots zoobot --arch {arch} --backbones imagenet,zoobot --zoobot-weights {zoobot} "
            f"--imagenet-weights {imagenet}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="convnext_nano")
    p.add_argument("--out", default="weights")
    args = p.parse_args(argv)
    zoobot, imagenet = fetch(args.arch, args.out)
    print(f"wrote {zoobot} and {imagenet}; now run:\n  {command(args.arch, zoobot, imagenet)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
