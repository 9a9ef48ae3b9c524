"""Per-client tensors (personal layers, Ditto copies, momentum buffers) that exist only for clients that trained.

A registered client that has never been sampled holds nothing: its value is the store's initial value, implied.
So a federation of 1,000 registered clients of which 100 train costs the memory of 100, and one that never
trains a client costs nothing. Values live in memory (on the engine's device) or, when the registry is larger
than the memory budget, one file per client in a directory.

The on-disk store stays resumable after a kill: a client's file is never overwritten; each write is a new
version (``<client>.<version>.pt``, written atomically), the store remembers which version is current, and older
versions are deleted only by :meth:`ClientStates.commit` - after the checkpoint that no longer needs them is on
disk. A checkpoint names the versions it needs; loading it deletes everything else (a killed round's writes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from fedmtl.errors import CheckpointError

__all__ = ["ClientStates"]

Params = dict[str, torch.Tensor]


class ClientStates:
    """Per-client values of the parameters in ``initial``, materialised for a client only when first written.

    ``initial`` gives each name's value for a client that has none (an expanded zero costs no memory, for
    momentum buffers). With ``directory`` the values live in files there instead of in memory.
    """

    def __init__(self, initial: Params, *, directory: str | os.PathLike[str] | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.initial = initial
        self.device = torch.device(device)
        self.directory = Path(directory) if directory is not None else None
        self._memory: dict[int, Params] = {}
        self._versions: dict[int, int] = {}  # on disk: client -> current file version
        self.version = 0  # the version the next write is stamped with (the engine sets the round)
        if self.directory is not None:  # files a checkpoint does not name go at the first load or commit
            self.directory.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ queries
    @property
    def names(self) -> list[str]:
        return list(self.initial)

    @property
    def client_bytes(self) -> int:
        """Bytes one client's values take once written."""
        return sum(t.numel() * t.element_size() for t in self.initial.values())

    @property
    def trained(self) -> list[int]:
        """Clients holding their own values, in index order."""
        return sorted(self._versions if self.directory is not None else self._memory)

    @property
    def nbytes(self) -> int:
        """Memory the store holds now (0 for the on-disk store: its values are in files)."""
        return sum(t.numel() * t.element_size() for p in self._memory.values() for t in p.values())

    def __contains__(self, client: int) -> bool:
        return client in (self._versions if self.directory is not None else self._memory)

    def __len__(self) -> int:
        return len(self.trained)

    def _file(self, client: int, version: int) -> Path:
        assert self.directory is not None
        return self.directory / f"{client}.{version}.pt"

    def get(self, client: int) -> Params:
        """One client's values (the initial ones if it has none); read-only views for the in-memory store."""
        if self.directory is not None:
            if client not in self._versions:
                return self.initial
            return torch.load(self._file(client, self._versions[client]), map_location=self.device,
                              weights_only=True)
        return self._memory.get(client, self.initial)

    def gather(self, clients: torch.Tensor, names: list[str] | None = None) -> Params:
        """Client-stacked values ``[c, ...]`` of ``clients`` (new tensors: writing to them changes nothing here).

        One client's values are read at a time (from disk: one file in memory beside the stack, not c of them)."""
        names = self.names if names is None else names
        ids = clients.tolist()
        out = {n: torch.empty(len(ids), *self.initial[n].shape, dtype=self.initial[n].dtype, device=self.device)
               for n in names}
        for i, c in enumerate(ids):
            row = self.get(int(c))
            for n in names:
                out[n][i].copy_(row[n])
            del row
        return out

    # ------------------------------------------------------------------ writes
    def scatter(self, clients: torch.Tensor, values: Params) -> None:
        """Store row ``i`` of every ``values[n]`` as client ``clients[i]``'s value (copied)."""
        for i, c in enumerate(clients.tolist()):
            row = {n: values[n][i] for n in self.names}
            if self.directory is None:
                mine = self._memory.get(c)
                if mine is None:
                    self._memory[c] = {n: t.detach().clone() for n, t in row.items()}
                else:
                    for n, t in row.items():
                        mine[n].copy_(t)
                continue
            # clone: saving a view would write the whole stack's storage; straight to a temporary file and renamed,
            # so no second in-memory copy of the bytes
            path = self._file(c, self.version)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            try:
                torch.save({n: t.detach().cpu().clone() for n, t in row.items()}, tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            self._versions[c] = self.version

    def commit(self) -> None:
        """Delete superseded files: call once a checkpoint naming the current versions (or none) is safe."""
        if self.directory is not None:
            self._drop_unreferenced()

    def _drop_unreferenced(self) -> None:
        assert self.directory is not None
        keep = {self._file(c, v).name for c, v in self._versions.items()}
        for path in self.directory.glob("*.pt"):
            if path.name not in keep:
                path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """In memory: the values themselves; on disk: which file version is each client's (the files stay)."""
        if self.directory is not None:
            return {"versions": dict(self._versions)}
        return {"values": {c: {n: t.detach().clone() for n, t in p.items()} for c, p in self._memory.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.directory is not None:
            if "versions" not in state:
                raise CheckpointError("checkpoint holds per-client values in memory but this run keeps them on "
                                      "disk (another memory budget?); resume with the budget it was written with")
            versions = {int(c): int(v) for c, v in state["versions"].items()}
            missing = [c for c, v in versions.items() if not self._file(c, v).exists()]
            if missing:
                path = self._file(missing[0], versions[missing[0]])
                raise CheckpointError(f"checkpoint needs client state file {path}, which is missing "
                                      f"({len(missing)} missing in all)")
            self._versions = versions
            self._drop_unreferenced()
            return
        if "values" not in state:
            raise CheckpointError("checkpoint keeps per-client values on disk but this run keeps them in memory "
                                  "(another memory budget?); resume with the budget it was written with")
        self._memory = {int(c): {n: t.to(self.device).clone() for n, t in p.items()}
                        for c, p in state["values"].items()}
