"""The run store: every job that resumes keeps its work in one `RunStore` (content-keyed, locked, atomic).

- `run_store`: `RunStore` and its refusals (`RunChanged`, `FolderInUse`, `FolderNotEmpty`, `StageRefused`), model
  fingerprints (its module docstring states the contract);
- `files`: the file-level pieces (plain names, content hashes, the key's JSON form, atomic writes, fingerprints of
  data).

`from blindspots.store import RunStore` is the public path.
"""

from .run_store import (FolderInUse, FolderNotEmpty, RunChanged, RunStore, StageRefused, atomic_write_text,
                        fingerprint_data, fingerprint_file, fingerprint_model, fingerprint_tensor, jsonable, keyable, record_sort_key,
                        temporary_path)

__all__ = ["RunStore", "RunChanged", "FolderInUse", "FolderNotEmpty", "StageRefused", "fingerprint_model",
           "fingerprint_tensor", "fingerprint_file", "fingerprint_data", "jsonable", "keyable", "atomic_write_text", "temporary_path",
           "record_sort_key"]
