"""The numeric path a text encoder runs on: device, precision and runtime.

The same encoder weights give slightly different vectors on different paths (fp32 on a CPU,
bf16 autocast on a GPU, int8 dynamic quantization...), and the MRQ-VAE turns a small vector
difference into a different code now and then. A tokenizer version is therefore tied to the path
its training embedded with (recorded in its bundle's contract, :mod:`u2qt_core.bundle`); a
night on another path is refused unless ``u2qt evaluate`` measured that path's agreement.

A path is written ``device/precision/runtime``, e.g. ``cpu/fp32/eager``,
``cuda/bf16-autocast/eager``, ``cpu/fp32/int8-dynamic``; the runtime may be left out
(``cpu/bf16-autocast`` is ``cpu/bf16-autocast/eager``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from u2qt_core.errors import ConfigError

__all__ = ["NumericPath", "DEVICES", "PRECISIONS", "RUNTIMES", "parse_path", "resolve_path", "path_from_dict"]

DEVICES = ("cpu", "cuda")
#: precision -> the ``encoder.dtype`` that runs it
PRECISIONS = {"fp32": "float32", "bf16-autocast": "bfloat16-autocast", "bf16": "bfloat16", "fp16": "float16"}
RUNTIMES = ("eager", "int8-dynamic")


@dataclass(frozen=True)
class NumericPath:
    """Where and how the encoder computes: ``device`` (cpu, cuda), ``precision`` (fp32,
    bf16-autocast: fp32 weights under bf16 autocast, bf16 / fp16: the weights in that type) and
    ``runtime`` (eager torch, or int8-dynamic: torch.ao dynamic quantization of the Linear layers)."""

    device: str
    precision: str
    runtime: str = "eager"

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"numeric path device {self.device!r} is not one of {list(DEVICES)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"numeric path precision {self.precision!r} is not one of {list(PRECISIONS)}")
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"numeric path runtime {self.runtime!r} is not one of {list(RUNTIMES)}")
        if self.runtime == "int8-dynamic" and self.device != "cpu":
            raise ConfigError(f"numeric path {self.label}: int8-dynamic is a CPU runtime")

    @property
    def label(self) -> str:
        """``device/precision/runtime``."""
        return f"{self.device}/{self.precision}/{self.runtime}"

    def __str__(self) -> str:
        return self.label

    def as_dict(self) -> dict[str, str]:
        """What a bundle's contract records (``{"device", "precision", "runtime"}``)."""
        return asdict(self)

    def encoder_settings(self) -> dict[str, Any]:
        """The ``encoder.device`` / ``encoder.dtype`` / ``encoder.int8_dynamic`` that run this path
        (merge them into a :class:`~u2qt_core.encoders.text.TextEncoderConfig`)."""
        return {"device": self.device, "dtype": PRECISIONS[self.precision],
                "int8_dynamic": self.runtime == "int8-dynamic"}


def parse_path(text: str) -> NumericPath:
    """``"cpu/bf16-autocast"`` or ``"cpu/fp32/int8-dynamic"`` -> :class:`NumericPath`."""
    parts = str(text).strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ConfigError(f"numeric path {text!r} is not device/precision[/runtime] (e.g. cpu/bf16-autocast)")
    return NumericPath(*parts)


def path_from_dict(value: Any) -> NumericPath | None:
    """The path a bundle's contract records (``None`` when it records none)."""
    if not isinstance(value, dict):
        return None
    return NumericPath(str(value.get("device")), str(value.get("precision")), str(value.get("runtime", "eager")))


def resolve_path(dtype: str, int8_dynamic: bool, device: str) -> NumericPath:
    """The path an encoder with dtype policy ``dtype`` runs on ``device`` (``cpu`` / ``cuda``):
    ``auto`` is fp32 on a CPU and bf16 autocast on a GPU."""
    if dtype == "auto":
        precision = "bf16-autocast" if device == "cuda" else "fp32"
    else:
        by_dtype = {v: k for k, v in PRECISIONS.items()}
        if dtype not in by_dtype:
            raise ConfigError(f"encoder.dtype {dtype!r} has no numeric path; known: {['auto', *by_dtype]}")
        precision = by_dtype[dtype]
    return NumericPath(device, precision, "int8-dynamic" if int8_dynamic else "eager")
