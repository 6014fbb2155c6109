"""The plan's checks of its models, each a one-line SpecError at the sweep key that caused it.

Each distinct model's axis combination; its forward pass, kernels and micro-batches at its
trial's image size (shapes only, on the meta device, remembered in ablate's model cache); and
trials that build the same network as another. torch and timm are imported only when a check
is not in the cache.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from ablate.config import DataConfig
from ablate.errors import AblateError, SpecError, first_line
from ablate.plan.checks import _first_per, _source, num_classes
from ablate.plan.expand import Candidate
from ablate.spec import Sweep, _dotted


def _first_per_model_at_size(kept: list[Candidate]) -> Iterator[Candidate]:
    """The first trial of each distinct (model config, image size), as :func:`_first_per`."""
    seen: set = set()
    for c in kept:
        pair = (c.config.model, c.config.data.img_size)
        if pair not in seen:
            seen.add(pair)
            yield c


def check_models(sweep: Sweep, kept: list[Candidate], cache: Any) -> None:
    for c in _first_per(kept, "model"):
        model = c.config.model
        config = dataclasses.asdict(model)
        if cache.get("valid", config):
            continue  # checked before by the same code: no need to import torch and timm
        from ablate.models import validate_model  # the registry imports torch and timm

        try:
            validate_model(model.arch, **model.axes())
        except AblateError as e:
            axis = (e.key or "arch").split(".")[-1]
            key = f"model.{axis}" if f"model.{axis}" in c.varied or axis in model.axes() \
                else "model.arch"
            raise SpecError(f"{e.what} (trial '{c.label}')", key=_dotted(_source(c, key)),
                            hint=e.hint, **sweep.where(*_source(c, key))) from None
        cache.put("valid", config, True)
    _check_kernels(sweep, kept, cache)
    _check_input_sizes(sweep, kept, cache)
    _check_single_samples(sweep, kept, cache)
    cache.save()


def _check_single_samples(sweep: Sweep, kept: list[Candidate], cache: Any) -> None:
    """A micro-batch of one sample trains only a model without BatchNorm over one value per
    channel (the dynamic DWNets' kernel generators, a 1x1 last map): refused here, not at
    the trial's first step."""
    workers = sweep.resources.workers
    ones = [c for c in kept if c.config.train.batch_size == workers * c.config.train.accum_steps]
    for c in _first_per_model_at_size(ones):
        model, img = c.config.model, c.config.data.img_size
        config = {"model": dataclasses.asdict(model), "img_size": img}
        if cache.get("trains_on_one", config):
            continue
        from ablate.models import single_sample_error

        why = single_sample_error(model.arch, img_size=img, **model.axes())
        if why is not None:
            key = "train.accum_steps" if c.config.train.accum_steps > 1 else \
                "train.batch_size"
            raise sweep.error(f"{model.arch} cannot train on micro-batches of one sample: {why} "
                              f"(trial '{c.label}')", *_source(c, key),
                              hint="use a micro-batch (batch_size / (workers * accum_steps)) "
                              "of at least 2")
        cache.put("trains_on_one", config, True)


# how the backbone calls a plugin's part (the contract of ablate.models' register_* functions)
_BUILT_AS = {"mixer": "Mixer(dim, *, num_groups, kernel_size, shift)",
             "block": "Block(dim, mixer_layer, *, num_groups, kernel_size, shift, se, drop_path)"}


def _check_input_sizes(sweep: Sweep, kept: list[Candidate], cache: Any) -> None:
    """Each model runs a forward pass (shapes only) at its trial's image size: a timm model
    built for another size (Swin's windows, a ViT's position table) is refused here, not in
    the first step of a trial."""
    for c in _first_per_model_at_size(kept):
        model, img = c.config.model, c.config.data.img_size
        config = {"model": dataclasses.asdict(model), "img_size": img}
        if cache.get("runs_at", config):
            continue
        from ablate.models import input_error, plugin_parts

        plugins = plugin_parts(model.arch, **model.axes())
        try:
            why = input_error(model.arch, img_size=img,
                              num_classes=num_classes(c.config.data) or 2, **model.axes())
        except Exception as e:  # noqa: BLE001 - building the model raised
            if not plugins:
                raise
            kind, name = plugins[0]  # the arch and axes are valid: the plugin's code failed
            raise sweep.error(f"{model.arch} with the plugin {kind} '{name}' cannot be built: "
                              f"{type(e).__name__}: {first_line(e)} (trial '{c.label}')",
                              *_source(c, f"model.{kind}"), hint=f"ablate builds a {kind} as "
                              f"{_BUILT_AS[kind]}: check the plugin's code") from None
        if why is not None:
            if plugins:  # ablate's backbones take any size: the plugin's code failed
                kind, name = plugins[0]
                raise sweep.error(f"{model.arch} with the plugin {kind} '{name}' fails its "
                                  f"forward pass at {img}x{img}: {why} (trial '{c.label}')",
                                  *_source(c, f"model.{kind}"), hint=f"a {kind} must map "
                                  "(B, H, W, C) to (B, H, W, C): check the plugin's code")
            raise sweep.error(f"{model.arch} cannot take {img}x{img} images: {why} "
                              f"(trial '{c.label}')", *_source(c, "data.img_size"),
                              hint="use an image size the model is built for (a timm model's "
                              "own, such as 224), or one of ablate's models")
        cache.put("runs_at", config, True)


def _check_kernels(sweep: Sweep, kept: list[Candidate], cache: Any) -> None:
    """A kernel wider than 2M - 1, M the first stage's map side, has taps that never reach
    an image position: refuse it rather than train parameters that stay zero-input."""
    for c in _first_per_model_at_size(kept):
        model, img = c.config.model, c.config.data.img_size
        if model.kernel_size is None:
            continue
        config = {"model": dataclasses.asdict(model), "img_size": img}
        side = cache.get("stage1", config)
        if side is None:
            from ablate.models import is_ablate_model
            from ablate.models.registry import resolve

            if not is_ablate_model(model.arch):
                continue
            side = -(-img // resolve(model.arch, **model.axes()).patch_size)
            cache.put("stage1", config, side)
        if model.kernel_size > 2 * side - 1:
            raise sweep.error(f"kernel_size {model.kernel_size} is wider than the first stage's "
                              f"{side}x{side} map allows at img_size {img} (trial '{c.label}')",
                              *_source(c, "model.kernel_size"),
                              hint=f"use a kernel_size of at most {2 * side - 1}")


def check_same_models(sweep: Sweep, kept: list[Candidate],
                      fingerprints: dict[DataConfig, str | None], cache: Any) -> None:
    """A trial of another id than a baseline trial that builds the baseline's network (an axis
    set to the model's own default: kernel_size 3 on a _nano model, drop_path_rate 0) with the
    same data, recipe and seed would train the identical model again, and the report would
    compare the model with itself. The ids stay as they are (they hash the configuration as
    written); the plan refuses the trial, naming the axis that makes no difference. The same
    holds between two arms that ask for one network in two ways (a model by name, and the
    mixer that makes it): the later one is refused, naming the first (a baseline first)."""
    built: dict = {}

    def key(c: Candidate) -> tuple:
        model = c.config.model
        if model not in built:
            built[model] = _built_network(model, cache)
        ident = c.config.identity(fingerprints.get(c.config.data), sweep.resources.workers)
        return built[model], json.dumps({k: v for k, v in ident.items()
                                         if not k.startswith("model.")}, sort_keys=True,
                                        default=str)

    first: dict[tuple, Candidate] = {}
    for c in sorted(kept, key=lambda c: c.role != "baseline"):  # stable: baselines first
        seen = first.setdefault(key(c), c)
        if seen.config != c.config:
            raise _same_model_error(sweep, c, seen)
    cache.save()


def _built_network(model: Any, cache: Any) -> str:
    """What the network built from ``model`` is made of (one of ablate's models: its resolved
    blocks, mixer, widths, groups, kernel, ...; a timm model: its configuration as written)."""
    config = dataclasses.asdict(model)
    hit = cache.get("network", config)
    if hit is None:
        from ablate.models import is_ablate_model

        hit = config
        if is_ablate_model(model.arch):
            from ablate.models.registry import resolve

            spec = resolve(model.arch, **model.axes())
            hit = {"block": spec.block, "mixer": spec.mixer, "embed_dim": spec.embed_dim,
                   "depths": list(spec.depths), "groups": list(spec.groups),
                   "kernel_size": spec.kernel_size, "se": spec.se,
                   "drop_path_rate": spec.drop_path_rate, "patch_size": spec.patch_size}
        cache.put("network", config, hit)
    return json.dumps(hit, sort_keys=True)


def _same_model_error(sweep: Sweep, c: Candidate, first: Candidate) -> SpecError:
    """'trial X builds the same model as Y: model.kernel_size 3 is dwnet_nano's default'."""
    a, b = dataclasses.asdict(c.config.model), dataclasses.asdict(first.config.model)
    keys = [f"model.{k}" for k in a if a[k] != b[k]]
    at = next((k for k in keys if k in c.sources), None) or next(iter(c.sources), None)
    where = c.sources.get(at, ("base", "model")) if at else ("base", "model")
    if len(keys) == 1 and None in (a[keys[0][6:]], b[keys[0][6:]]):
        value = b[keys[0][6:]] if a[keys[0][6:]] is None else a[keys[0][6:]]
        why = f"{keys[0]} {_fmt(value)} is {c.config.model.arch}'s default"
    else:
        def axes(d: dict) -> str:
            return ", ".join(f"{k} {_fmt(d[k[6:]])}" for k in keys)
        why = f"{axes(a)} builds what {axes(b)} does, the other axes being equal"
    kind = "arm" if where[0] == "arms" and c.label == where[1] else "trial"
    return sweep.error(f"{kind} '{c.label}' builds the same model as '{first.label}' (same data, "
                       f"recipe and seed {c.config.seed}): {why}", *where,
                       hint="drop the arm or grid value, or change the value")


def _fmt(value: Any) -> str:
    return {True: "true", False: "false", None: "null"}.get(value, str(value)) \
        if isinstance(value, (bool, type(None))) else str(value)
