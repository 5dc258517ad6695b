#!/usr/bin/env python3
"""Writes the LPIPS weight file that `atelier-metrics` loads (`lpips_alex.safetensors`,
`lpips_vgg.safetensors`): the `state_dict()` of `lpips.LPIPS(net=..., version="0.1")` as
safetensors, from the two files it is made of.

    python tools/convert_lpips_weights.py --net alex \
        --torchvision alexnet-owt-7be5be79.pth --lpips alex.pth -o lpips_alex.safetensors
    python tools/convert_lpips_weights.py --net vgg \
        --torchvision vgg16-397923af.pth --lpips vgg.pth -o lpips_vgg.safetensors

* `--torchvision`: torchvision's ImageNet weights of the backbone, the file that
  `torchvision.models.alexnet(weights="IMAGENET1K_V1")` / `vgg16(weights="IMAGENET1K_V1")`
  downloads into `~/.cache/torch/hub/checkpoints/` (from
  https://download.pytorch.org/models/alexnet-owt-7be5be79.pth and
  https://download.pytorch.org/models/vgg16-397923af.pth). Only `features.*` is used.
* `--lpips`: the learned linear layers of LPIPS v0.1, `alex.pth` / `vgg.pth`. They ship
  inside the `lpips` pip package (`lpips/weights/v0.1/`, BSD-2-Clause, Richard Zhang et
  al.); when `--lpips` is left out and the package is installed, its file is used.

Needs only torch and safetensors (`pip install torch safetensors`), no network.

Keys, as `lpips.LPIPS().state_dict()` names them (the `lins.N.*` duplicates of `linN.*`
are left out: safetensors stores a shared tensor once):

    scaling_layer.shift, scaling_layer.scale    [1,3,1,1]
    net.slice{1..5}.{i}.weight / .bias          conv i of torchvision's `features`
    lin{0..4}.model.1.weight                    [1,C,1,1], no bias
"""

import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

# (slice ends, conv layers with their (out, in, kernel)) of torchvision's `features`, as
# `lpips/pretrained_networks.py` slices them.
NETS = {
    "alex": {
        "slices": [2, 5, 8, 10, 12],
        "convs": {
            0: (64, 3, 11),
            3: (192, 64, 5),
            6: (384, 192, 3),
            8: (256, 384, 3),
            10: (256, 256, 3),
        },
        "channels": [64, 192, 384, 256, 256],
    },
    "vgg": {
        "slices": [4, 9, 16, 23, 30],
        "convs": {
            0: (64, 3, 3),
            2: (64, 64, 3),
            5: (128, 64, 3),
            7: (128, 128, 3),
            10: (256, 128, 3),
            12: (256, 256, 3),
            14: (256, 256, 3),
            17: (512, 256, 3),
            19: (512, 512, 3),
            21: (512, 512, 3),
            24: (512, 512, 3),
            26: (512, 512, 3),
            28: (512, 512, 3),
        },
        "channels": [64, 128, 256, 512, 512],
    },
}

# lpips.ScalingLayer's buffers (`torch.Tensor([...])`, float32).
SHIFT = [-0.030, -0.088, -0.188]
SCALE = [0.458, 0.448, 0.450]


def slice_of(net, layer):
    """1-based LPIPS slice holding torchvision `features` layer `layer`."""
    for k, end in enumerate(NETS[net]["slices"]):
        if layer < end:
            return k + 1
    raise ValueError(f"layer {layer} is past the last LPIPS slice")


def backbone_keys(net):
    """(LPIPS key, torchvision key, shape) of every backbone tensor, in state_dict order."""
    out = []
    for layer, (cout, cin, k) in NETS[net]["convs"].items():
        s = slice_of(net, layer)
        out.append((f"net.slice{s}.{layer}.weight", f"features.{layer}.weight", (cout, cin, k, k)))
        out.append((f"net.slice{s}.{layer}.bias", f"features.{layer}.bias", (cout,)))
    return out


def lin_keys(net):
    """(key, shape) of the linear layers; the `.pth` files name them the same way."""
    return [(f"lin{i}.model.1.weight", (1, c, 1, 1)) for i, c in enumerate(NETS[net]["channels"])]


def convert(net, torchvision_sd, lpips_sd, torchvision_name="the torchvision file", lpips_name="the lpips file"):
    """The LPIPS state dict (without `lins.*`) from the two state dicts; raises ValueError
    naming the file and the tensor when one is missing or has the wrong shape."""

    def take(sd, key, shape, what):
        if key not in sd:
            raise ValueError(f"{what} has no tensor `{key}`: is it the {net} file?")
        t = sd[key]
        if tuple(t.shape) != tuple(shape):
            raise ValueError(
                f"{what}: tensor `{key}` has shape {list(t.shape)}, expected {list(shape)} "
                f"for LPIPS {net}"
            )
        return t.detach().to(torch.float32).contiguous().clone()

    out = {
        "scaling_layer.shift": torch.tensor(SHIFT, dtype=torch.float32)[None, :, None, None],
        "scaling_layer.scale": torch.tensor(SCALE, dtype=torch.float32)[None, :, None, None],
    }
    for key, tv_key, shape in backbone_keys(net):
        out[key] = take(torchvision_sd, tv_key, shape, torchvision_name)
    for key, shape in lin_keys(net):
        # Some copies of the LPIPS files carry the `lins.N.` alias instead.
        alias = key.replace("lin", "lins.", 1)
        src = key if key in lpips_sd or alias not in lpips_sd else alias
        out[key] = take(lpips_sd, src, shape, lpips_name)
    return out


def default_lpips_file(net):
    try:
        import lpips
    except ImportError:
        return None
    path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    return path if path.is_file() else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", choices=sorted(NETS), required=True)
    parser.add_argument("--torchvision", type=Path, required=True, help="alexnet-owt-7be5be79.pth / vgg16-397923af.pth")
    parser.add_argument("--lpips", type=Path, help="alex.pth / vgg.pth (default: the installed lpips package's)")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)

    lpips_path = args.lpips or default_lpips_file(args.net)
    if lpips_path is None:
        parser.error(f"--lpips is needed: the lpips package (with weights/v0.1/{args.net}.pth) is not installed")
    try:
        torchvision_sd = torch.load(args.torchvision, map_location="cpu", weights_only=True)
        lpips_sd = torch.load(lpips_path, map_location="cpu", weights_only=True)
        tensors = convert(args.net, torchvision_sd, lpips_sd, f"`{args.torchvision}`", f"`{lpips_path}`")
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    save_file(tensors, str(args.output), metadata={"format": "pt", "lpips_version": "0.1", "net": args.net})
    print(f"wrote {args.output} ({len(tensors)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
