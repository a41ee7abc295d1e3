"""Named deployment targets (`profiles/*.yaml`): preferred settings for a known kind of host.

A profile says which hosts it is for (`match`: GPU name and memory, or CPU-only and small)
and what it prefers (`settings`: canvas, shapes, batch, precision, workspaces, instances).
The planner starts from these preferences and still fits them to the host's memory; a host
that matches no profile is planned from its own figures. One small YAML file per profile,
shipped as package data (`stdr_deploy.profile_data` = the top-level `profiles/` folder);
the file name is the profile name.
"""

from __future__ import annotations

import functools
import importlib.resources
from dataclasses import dataclass, fields
from typing import Any

from stdr_deploy.errors import UserInputError
from stdr_deploy.hardware import HostFacts
from stdr_deploy.plan_schema import PRECISIONS as PLAN_PRECISIONS

DEVICES = ("cpu", "gpu")
# What a profile may force; int8 is the planner's own choice for CPUs with int8 units.
PRECISIONS = tuple(p for p in PLAN_PRECISIONS if p != "int8")
MAX_RECOGNIZER_BATCH = 64


@dataclass(frozen=True)
class ProfileMatch:
    """Every criterion given must hold; GPU criteria look at the host's first GPU."""

    gpu_name_contains: str | None = None  # case-insensitive substring of the NVML name
    min_memory_mib: int | None = None  # GPU total memory, as NVML reports it
    max_memory_mib: int | None = None
    max_cores: int | None = None  # usable physical cores (cpu profiles)


@dataclass(frozen=True)
class ProfileSettings:
    """Preferred values; None leaves the planner's default for the host."""

    canvas_size: int | None = None  # detector: long side scaled to at most this many pixels
    detector_opt_side: int | None = None  # TensorRT optimisation shape (square)
    detector_precision: str | None = None  # TensorRT only; ONNX Runtime always runs fp32
    recognizer_precision: str | None = None
    recognizer_batch: tuple[int, int, int] | None = None  # min, opt, max crops per call
    detector_workspace_mib: int | None = None  # TensorRT builder memory-pool limit
    recognizer_workspace_mib: int | None = None
    detector_instances: int | None = None
    recognizer_instances: int | None = None


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    device: str  # the device the settings were chosen for: "cpu" | "gpu"
    match: ProfileMatch
    settings: ProfileSettings

    def matches(self, host: HostFacts) -> bool:
        crit = self.match
        if self.device == "cpu":
            return not host.gpus and (crit.max_cores is None or host.usable_cores <= crit.max_cores)
        if not host.gpus:
            return False
        gpu = host.gpus[0]
        return (
            (crit.gpu_name_contains is None or crit.gpu_name_contains.lower() in gpu.name.lower())
            and (crit.min_memory_mib is None or gpu.memory_total_mib >= crit.min_memory_mib)
            and (crit.max_memory_mib is None or gpu.memory_total_mib <= crit.max_memory_mib)
        )


def parse_profile(name: str, data: Any) -> Profile:
    """Validate one profile document; every mistake names the profile and the key."""

    def fail(message: str) -> UserInputError:
        return UserInputError(f"profile {name!r}: {message}", hint=f"fix profiles/{name}.yaml")

    if not isinstance(data, dict):
        raise fail("the file must hold a mapping")
    unknown = set(data) - {"description", "device", "match", "settings"}
    if unknown:
        raise fail(f"unknown keys {sorted(unknown)}")
    if data.get("device") not in DEVICES:
        raise fail(f"device must be one of {DEVICES}, got {data.get('device')!r}")
    match = _dataclass_from(ProfileMatch, data.get("match") or {}, fail)
    settings = _dataclass_from(ProfileSettings, data.get("settings") or {}, fail)
    for key in ("detector_precision", "recognizer_precision"):
        if getattr(settings, key) not in (None, *PRECISIONS):
            raise fail(f"settings.{key} must be one of {PRECISIONS}")
    if settings.recognizer_batch is not None:
        batch = settings.recognizer_batch
        if len(batch) != 3 or not 1 == batch[0] <= batch[1] <= batch[2] <= MAX_RECOGNIZER_BATCH:
            raise fail(f"settings.recognizer_batch must be [1, opt, max] with opt <= max <= {MAX_RECOGNIZER_BATCH}")
    for f in fields(ProfileSettings):
        value = getattr(settings, f.name)
        if isinstance(value, int) and value < 1:
            raise fail(f"settings.{f.name} must be positive")
    return Profile(name, str(data.get("description", "")).strip(), data["device"], match, settings)


def _dataclass_from(cls: type, data: Any, fail) -> Any:
    if not isinstance(data, dict):
        raise fail(f"{cls.__name__} must be a mapping")
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise fail(f"unknown keys {sorted(unknown)}; known: {sorted(known)}")
    values = {}
    for key, value in data.items():
        expected = _TYPES[known[key].type.split("[")[0].split(" |")[0]]
        if isinstance(value, list):
            value = tuple(value)
        if isinstance(value, bool) or not isinstance(value, expected):
            raise fail(f"{key} must be {known[key].type.removesuffix(' | None')}, got {value!r}")
        if isinstance(value, tuple) and not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise fail(f"{key} must be a list of integers, got {list(value)!r}")
        values[key] = value
    return cls(**values)


# annotation (as written, postponed) -> runtime type, for the fields profiles use
_TYPES = {"int": int, "str": str, "tuple": tuple}


@functools.lru_cache(maxsize=1)
def load_profiles() -> tuple[Profile, ...]:
    """Every shipped profile, sorted by name (the order `match_profile` tries them in)."""
    import yaml

    folder = importlib.resources.files("stdr_deploy.profile_data")
    found = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            name = entry.name.removesuffix(".yaml")
            try:
                data = yaml.safe_load(entry.read_text())
            except yaml.YAMLError as exc:
                raise UserInputError(f"profile {name!r} is not valid YAML: {exc}") from exc
            found.append(parse_profile(name, data))
    return tuple(found)


def profile_names() -> list[str]:
    return [p.name for p in load_profiles()]


def get_profile(name: str) -> Profile:
    for profile in load_profiles():
        if profile.name == name:
            return profile
    raise UserInputError(f"unknown profile {name!r}", hint=f"profiles: {', '.join(profile_names())}")


def match_profile(host: HostFacts) -> Profile | None:
    """The first profile (by name) whose `match` holds for this host, else None."""
    return next((p for p in load_profiles() if p.matches(host)), None)


def resolve_profile(host: HostFacts, name: str | None = None) -> Profile | None:
    """The profile a command should plan with: the one named, else the host's match."""
    return get_profile(name) if name else match_profile(host)
