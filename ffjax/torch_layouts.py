"""Which PyTorch state-dict key is which ffjax parameter, per reference architecture.

timm (`legacy_xception`, `resnet34`, `efficientnet_b4`), torchvision's ResNet, Luke
Melas-Kyriazi's EfficientNet and smp's U-Net, FPN and DeepLabV3+ decoders. `plan` recognises a
file's layout from its keys; `ffjax.convert` reads files, converts the arrays and loads them.
Each mapping gives `torch key -> (ffjax path, kind)`, kind one of `conv` (a kernel to
transpose), `conv1x1_linear` (a 1x1 kernel used as a linear layer), `linear`, `bias`, `bn`
(also GroupNorm's affine terms).
"""

from __future__ import annotations

import re

_BN = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def _bn(torch_suffix: str) -> str | None:
    return _BN.get(torch_suffix)


def _xception_block(n: int) -> str:
    if n <= 3:
        return f"block{n}"
    if n <= 11:
        return f"middle.{n - 4}"
    return "block12"


def _xception_keys(keys: list[str], src: str, dst: str) -> dict[str, tuple[str, str]]:
    """torch key -> (ffjax path, kind) for a timm/pretrainedmodels Xception under prefix `src`."""
    out: dict[str, tuple[str, str]] = {}
    # Order of the separable convs and BatchNorms inside each block's `rep` Sequential.
    reps: dict[int, dict[str, list[int]]] = {}
    rep_re = re.compile(rf"^{re.escape(src)}block(\d+)\.rep\.(\d+)\.(.+)$")
    for key in keys:
        m = rep_re.match(key)
        if m:
            kind = "sep" if m.group(3).startswith(("conv1.", "pointwise.")) else "bn"
            reps.setdefault(int(m.group(1)), {"sep": [], "bn": []})[kind].append(int(m.group(2)))
    order = {n: {k: sorted(set(v)) for k, v in d.items()} for n, d in reps.items()}
    for key in keys:
        rest = key[len(src):] if key.startswith(src) else None
        if rest is None:
            continue
        head, _, leaf = rest.rpartition(".")
        if m := re.fullmatch(r"(conv[12])", head):
            out[key] = (f"{dst}{m.group(1)}.conv.kernel", "conv")
        elif m := re.fullmatch(r"bn([12])", head):
            out[key] = (f"{dst}conv{m.group(1)}.bn.{_bn(leaf)}", "bn")
        elif m := re.fullmatch(r"block(\d+)\.skip", head):
            out[key] = (f"{dst}{_xception_block(int(m.group(1)))}.skip.conv.kernel", "conv")
        elif m := re.fullmatch(r"block(\d+)\.skipbn", head):
            out[key] = (f"{dst}{_xception_block(int(m.group(1)))}.skip.bn.{_bn(leaf)}", "bn")
        elif m := re.fullmatch(r"block(\d+)\.rep\.(\d+)\.(conv1|pointwise)", head):
            n, r = int(m.group(1)), int(m.group(2))
            i = order[n]["sep"].index(r)
            part = "depthwise" if m.group(3) == "conv1" else "pointwise"
            out[key] = (f"{dst}{_xception_block(n)}.convs.{i}.{part}.kernel", "conv")
        elif m := re.fullmatch(r"block(\d+)\.rep\.(\d+)", head):
            n, r = int(m.group(1)), int(m.group(2))
            out[key] = (f"{dst}{_xception_block(n)}.bns.{order[n]['bn'].index(r)}.{_bn(leaf)}", "bn")
        elif m := re.fullmatch(r"(conv[34])\.(conv1|pointwise)", head):
            part = "depthwise" if m.group(2) == "conv1" else "pointwise"
            out[key] = (f"{dst}{m.group(1)}.{part}.kernel", "conv")
        elif m := re.fullmatch(r"(bn[34])", head):
            out[key] = (f"{dst}{m.group(1)}.{_bn(leaf)}", "bn")
    return out


def _resnet_keys(keys: list[str], src: str, dst: str) -> dict[str, tuple[str, str]]:
    """torch key -> (ffjax path, kind) for a torchvision/timm/smp ResNet under prefix `src`."""
    out: dict[str, tuple[str, str]] = {}
    for key in keys:
        if not key.startswith(src):
            continue
        head, _, leaf = key[len(src):].rpartition(".")
        if head == "conv1":
            out[key] = (f"{dst}stem.conv.kernel", "conv")
        elif head == "bn1":
            out[key] = (f"{dst}stem.bn.{_bn(leaf)}", "bn")
        elif m := re.fullmatch(r"layer(\d)\.(\d+)\.conv([12])", head):
            out[key] = (f"{dst}layers.{int(m.group(1)) - 1}.{m.group(2)}.conv{m.group(3)}.conv.kernel", "conv")
        elif m := re.fullmatch(r"layer(\d)\.(\d+)\.bn([12])", head):
            out[key] = (f"{dst}layers.{int(m.group(1)) - 1}.{m.group(2)}.conv{m.group(3)}.bn.{_bn(leaf)}", "bn")
        elif m := re.fullmatch(r"layer(\d)\.(\d+)\.downsample\.0", head):
            out[key] = (f"{dst}layers.{int(m.group(1)) - 1}.{m.group(2)}.downsample.conv.kernel", "conv")
        elif m := re.fullmatch(r"layer(\d)\.(\d+)\.downsample\.1", head):
            out[key] = (f"{dst}layers.{int(m.group(1)) - 1}.{m.group(2)}.downsample.bn.{_bn(leaf)}", "bn")
    return out


def _timm_efficientnet_keys(keys: list[str], dst: str) -> dict[str, tuple[str, str]]:
    """torch key -> (ffjax path, kind) for a timm `efficientnet_b4` (blocks.<stage>.<repeat>)."""
    out: dict[str, tuple[str, str]] = {}
    repeats: dict[int, int] = {}
    for key in keys:
        if m := re.match(r"blocks\.(\d+)\.(\d+)\.", key):
            repeats[int(m.group(1))] = max(repeats.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    first = {s: sum(repeats[t] for t in sorted(repeats) if t < s) for s in repeats}
    top = {"conv_stem": "stem.conv", "bn1": "stem.bn", "conv_head": "head_conv.conv", "bn2": "head_conv.bn"}
    for key in keys:
        head, _, leaf = key.rpartition(".")
        if head in top:
            out[key] = (f"{dst}{top[head]}.{'kernel' if head.startswith('conv') else _bn(leaf)}",
                        "conv" if head.startswith("conv") else "bn")
        elif head == "classifier":
            out[key] = (f"fc.{'kernel' if leaf == 'weight' else 'bias'}", "linear" if leaf == "weight" else "bias")
        elif m := re.fullmatch(r"blocks\.(\d+)\.(\d+)\.(.+)", head):
            block = f"{dst}blocks.{first[int(m.group(1))] + int(m.group(2))}."
            part = m.group(3)
            expanded = any(k.startswith(f"blocks.{m.group(1)}.{m.group(2)}.conv_pwl.") for k in keys)
            # timm names the first stage's (unexpanded) block's parts differently.
            names = ({"conv_pw": "expand.conv", "bn1": "expand.bn", "conv_dw": "depthwise.conv",
                      "bn2": "depthwise.bn", "conv_pwl": "project.conv", "bn3": "project.bn"} if expanded else
                     {"conv_dw": "depthwise.conv", "bn1": "depthwise.bn", "conv_pw": "project.conv", "bn2": "project.bn"})
            if part in ("se.conv_reduce", "se.conv_expand"):
                name = "se_reduce" if part.endswith("reduce") else "se_expand"
                out[key] = (f"{block}{name}.{'kernel' if leaf == 'weight' else 'bias'}",
                            "conv1x1_linear" if leaf == "weight" else "bias")
            elif part in names:
                conv = names[part].endswith(".conv")
                out[key] = (f"{block}{names[part]}.{'kernel' if conv else _bn(leaf)}", "conv" if conv else "bn")
    return out


def _lukemelas_efficientnet_keys(keys: list[str], src: str, dst: str) -> dict[str, tuple[str, str]]:
    """torch key -> (ffjax path, kind) for Luke Melas-Kyriazi's EfficientNet (smp's encoder)."""
    out: dict[str, tuple[str, str]] = {}
    top = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head_conv.conv", "_bn1": "head_conv.bn"}
    parts = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
             "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}
    for key in keys:
        if not key.startswith(src):
            continue
        head, _, leaf = key[len(src):].rpartition(".")
        if head in top:
            conv = top[head].endswith(".conv")
            out[key] = (f"{dst}{top[head]}.{'kernel' if conv else _bn(leaf)}", "conv" if conv else "bn")
        elif m := re.fullmatch(r"_blocks\.(\d+)\.(_\w+)", head):
            block = f"{dst}blocks.{m.group(1)}."
            if m.group(2) in ("_se_reduce", "_se_expand"):
                out[key] = (f"{block}{m.group(2)[1:]}.{'kernel' if leaf == 'weight' else 'bias'}",
                            "conv1x1_linear" if leaf == "weight" else "bias")
            elif m.group(2) in parts:
                conv = parts[m.group(2)].endswith(".conv")
                out[key] = (f"{block}{parts[m.group(2)]}.{'kernel' if conv else _bn(leaf)}", "conv" if conv else "bn")
    return out


def _unet_decoder_keys(keys: list[str]) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for key in keys:
        head, _, leaf = key.rpartition(".")
        if m := re.fullmatch(r"decoder\.blocks\.(\d+)\.(conv[12])\.0", head):
            out[key] = (f"decoder.blocks.{m.group(1)}.{m.group(2)}.conv.kernel", "conv")
        elif m := re.fullmatch(r"decoder\.blocks\.(\d+)\.(conv[12])\.1", head):
            out[key] = (f"decoder.blocks.{m.group(1)}.{m.group(2)}.bn.{_bn(leaf)}", "bn")
        elif head == "segmentation_head.0":
            out[key] = ("head.kernel" if leaf == "weight" else "head.bias", "conv" if leaf == "weight" else "bias")
    return out


# smp decoders as (torch module pattern, ffjax module template, kind of module): conv (weight,
# bias), bn (BatchNorm) or gn (GroupNorm).
_SMP_DECODERS = {
    "fpn_resnet34": [
        (r"decoder\.p5", "decoder.lateral.0", "conv"),
        (r"decoder\.p4\.skip_conv", "decoder.lateral.1", "conv"),
        (r"decoder\.p3\.skip_conv", "decoder.lateral.2", "conv"),
        (r"decoder\.p2\.skip_conv", "decoder.lateral.3", "conv"),
        (r"decoder\.seg_blocks\.(\d+)\.block\.(\d+)\.block\.0", r"decoder.blocks.\1.\2.conv", "conv"),
        (r"decoder\.seg_blocks\.(\d+)\.block\.(\d+)\.block\.1", r"decoder.blocks.\1.\2.norm", "gn"),
        (r"segmentation_head\.0", "head", "conv"),
    ],
    "deeplabv3plus_resnet34": [
        (r"decoder\.aspp\.0\.convs\.0\.0", "aspp.branch_1x1.conv", "conv"),
        (r"decoder\.aspp\.0\.convs\.0\.1", "aspp.branch_1x1.bn", "bn"),
        (r"decoder\.aspp\.0\.convs\.([123])\.0\.0", "aspp.branches.{0}.conv.depthwise", "conv"),
        (r"decoder\.aspp\.0\.convs\.([123])\.0\.1", "aspp.branches.{0}.conv.pointwise", "conv"),
        (r"decoder\.aspp\.0\.convs\.([123])\.1", "aspp.branches.{0}.bn", "bn"),
        (r"decoder\.aspp\.0\.convs\.4\.1", "aspp.pooling.conv", "conv"),
        (r"decoder\.aspp\.0\.convs\.4\.2", "aspp.pooling.bn", "bn"),
        (r"decoder\.aspp\.0\.project\.0", "aspp.project.conv", "conv"),
        (r"decoder\.aspp\.0\.project\.1", "aspp.project.bn", "bn"),
        (r"decoder\.aspp\.1\.0", "aspp_out.conv.depthwise", "conv"),
        (r"decoder\.aspp\.1\.1", "aspp_out.conv.pointwise", "conv"),
        (r"decoder\.aspp\.2", "aspp_out.bn", "bn"),
        (r"decoder\.block1\.0", "highres.conv", "conv"),
        (r"decoder\.block1\.1", "highres.bn", "bn"),
        (r"decoder\.block2\.0\.0", "fuse.conv.depthwise", "conv"),
        (r"decoder\.block2\.0\.1", "fuse.conv.pointwise", "conv"),
        (r"decoder\.block2\.1", "fuse.bn", "bn"),
        (r"segmentation_head\.0", "head", "conv"),
    ],
}


def _smp_decoder_keys(model: str, keys: list[str]) -> dict[str, tuple[str, str]]:
    """torch key -> (ffjax path, kind) for the decoder and head of an smp FPN or DeepLabV3+."""
    out: dict[str, tuple[str, str]] = {}
    for key in keys:
        head, _, leaf = key.rpartition(".")
        for pattern, template, module in _SMP_DECODERS[model]:
            m = re.fullmatch(pattern, head)
            if not m:
                continue
            if "{0}" in template:  # ASPP's separable branches 1-3 are ffjax's branches 0-2
                path = template.format(int(m.group(1)) - 1)
            else:
                path = m.expand(template)
            if module == "conv":
                out[key] = (f"{path}.{'kernel' if leaf == 'weight' else 'bias'}", "conv" if leaf == "weight" else "bias")
            elif module == "gn":
                out[key] = (f"{path}.{'scale' if leaf == 'weight' else leaf}", "bn")
            else:
                out[key] = (f"{path}.{_bn(leaf)}", "bn")
            break
    return out


def plan(model: str, keys: list[str]) -> tuple[str, dict[str, tuple[str, str]], set[str]]:
    """(what the file is, torch key -> (ffjax path, kind), torch keys to leave out)."""
    smp_unet = any(k.startswith("decoder.blocks.") for k in keys)
    head = {k for k in keys if k.startswith(("fc.", "last_linear.", "classifier.", "_fc."))}
    if model == "xception":
        if smp_unet or any(k.startswith("encoder.") for k in keys):
            raise ValueError("this is a U-Net or encoder file; the xception classifier takes a timm legacy_xception file.")
        mapping = _xception_keys(keys, "", "backbone.")
        for k in head:
            if k.endswith(".weight") or k.endswith(".bias"):
                mapping[k] = ("fc.kernel" if k.endswith(".weight") else "fc.bias", "linear" if k.endswith(".weight") else "bias")
        return "timm legacy_xception", mapping, set()
    if model == "unet_xception":
        if smp_unet:
            return "smp Unet('xception')", {**_xception_keys(keys, "encoder.", "encoder."), **_unet_decoder_keys(keys)}, set()
        return "timm legacy_xception (encoder only)", _xception_keys(keys, "", "encoder."), head
    if model == "unet_resnet34":
        if smp_unet:
            return "smp Unet('resnet34')", {**_resnet_keys(keys, "encoder.", "encoder."), **_unet_decoder_keys(keys)}, set()
        return "torchvision/timm resnet34 (encoder only)", _resnet_keys(keys, "", "encoder."), head
    if model in _SMP_DECODERS:
        name = "FPN" if model.startswith("fpn") else "DeepLabV3Plus"
        if any(k.startswith("decoder.") for k in keys):
            return (f"smp {name}('resnet34')",
                    {**_resnet_keys(keys, "encoder.", "encoder."), **_smp_decoder_keys(model, keys)}, set())
        return "torchvision/timm resnet34 (encoder only)", _resnet_keys(keys, "", "encoder."), head
    if model == "resnet34":
        if smp_unet or any(k.startswith("encoder.") for k in keys):
            raise ValueError("this is a U-Net or encoder file; the resnet34 classifier takes a timm/torchvision resnet34 file.")
        mapping = _resnet_keys(keys, "", "backbone.")
        mapping.update({k: ("fc.kernel" if k.endswith(".weight") else "fc.bias", "linear" if k.endswith(".weight") else "bias")
                        for k in head if k.startswith("fc.")})
        return "timm/torchvision resnet34", mapping, set()
    if model == "efficientnet_b4":
        if smp_unet or any(k.startswith(("encoder.", "_blocks.")) for k in keys):
            raise ValueError("this is an smp U-Net or Luke Melas-Kyriazi EfficientNet file (other padding and "
                             "BatchNorm epsilon); the efficientnet_b4 classifier takes a timm efficientnet_b4 file.")
        return "timm efficientnet_b4", _timm_efficientnet_keys(keys, "backbone."), set()
    if model == "unet_efficientnet_b4":
        if smp_unet:
            return ("smp Unet('efficientnet-b4')",
                    {**_lukemelas_efficientnet_keys(keys, "encoder.", "encoder."), **_unet_decoder_keys(keys)}, set())
        if any(k.startswith("blocks.") for k in keys):
            raise ValueError("this is a timm efficientnet_b4 file; smp's U-Net encoder is Luke Melas-Kyriazi's "
                             "EfficientNet (TensorFlow padding, BatchNorm epsilon 1e-3): use its efficientnet-b4 file.")
        return "EfficientNet-B4, Luke Melas-Kyriazi's (encoder only)", _lukemelas_efficientnet_keys(keys, "", "encoder."), head
    supported = ("xception, resnet34, efficientnet_b4, unet_xception, unet_resnet34, unet_efficientnet_b4, "
                 "fpn_resnet34, deeplabv3plus_resnet34")
    raise ValueError(f"converting PyTorch weights is supported for {supported}, not {model!r}.")
