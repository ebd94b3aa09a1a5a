"""Writes legacy_export_X.Y.pt2 and legacy_export_X.Y.json: a torch.export
program as torch X.Y saves it (before the PT2 archive: every file at the top of
the archive, weights pickled), and the logits it gives on a few inputs.

The committed files were made with torch 2.2.2 and 2.6.0, each in a virtual
environment of its own (``pip install torch==2.6.0``, then ``python
tests/data/make_legacy_export.py``); tests/test_loading.py checks how this torch
treats them (2.13 cannot read the first at all, and reads the second).
"""

import json
import zipfile
from pathlib import Path

import torch
from torch import nn


class Summed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(40, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(tokens).sum(1))


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    torch.manual_seed(0)
    model = Summed().eval()
    dims = {0: torch.export.Dim("batch", min=1, max=1024), 1: torch.export.Dim("steps", max=512)}
    program = torch.export.export(model, (torch.randint(1, 40, (4, 6)),), dynamic_shapes=(dims,))
    version = torch.__version__.split("+")[0]
    name = "legacy_export_" + ".".join(version.split(".")[:2])
    archive = here / f"{name}.pt2"
    torch.export.save(program, str(archive))
    # The graph's stack traces name this file by its absolute path: keep the
    # repository's relative one, so that no machine's folders are committed.
    with zipfile.ZipFile(archive) as source:
        entries = [(info, source.read(info)) for info in source.infolist()]
    mine = str(Path(__file__).resolve()).encode()
    with zipfile.ZipFile(archive, "w") as target:
        for info, payload in entries:
            target.writestr(info, payload.replace(mine, b"tests/data/make_legacy_export.py"))
    inputs = torch.randint(1, 40, (5, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(inputs)
    reference = {
        "torch": version,
        "inputs": inputs.tolist(),
        "logits": logits.tolist(),
    }
    (here / f"{name}.json").write_text(json.dumps(reference, indent=1) + "\n")
