"""Cluster settings of the compiled pipeline (GPU pool, resources, secrets), from a YAML file.

Nothing cluster-specific is written in the pipeline code: `tympan pipeline compile --cluster FILE`
reads this, and the defaults in pipelines/cluster.yaml describe a typical GPU node pool."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tympan.errors import ConfigError

DEFAULT = Path(__file__).with_name("cluster.yaml")
CPU_QUANTITY = re.compile(r"^(\d+(\.\d+)?|\d+m)$")  # Kubernetes CPU: cores ("2", "1.5") or millicores ("500m")


class Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(Block):
    cpu_request: str | None = None
    cpu_limit: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None

    @field_validator("cpu_request", "cpu_limit")
    @classmethod
    def _cpu_quantity(cls, value: str | None) -> str | None:
        if value is not None and not CPU_QUANTITY.match(value):
            raise ValueError(f"{value!r} is not a CPU quantity such as '2', '1.5' or '500m'")
        return value

    def threads(self) -> int | None:
        """Threads for a task under this CPU limit: whole cores, at least one; None without a limit.

        More threads than the limit allows makes the CFS quota throttle the task."""
        if self.cpu_limit is None:
            return None
        cores = int(self.cpu_limit[:-1]) / 1000 if self.cpu_limit.endswith("m") else float(self.cpu_limit)
        return max(1, int(cores))


class Accelerator(Block):
    type: str = "nvidia.com/gpu"
    count: int = Field(1, ge=1)


class Toleration(Block):
    key: str
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = "NoSchedule"


class Pool(Block):
    """Where and with what a kind of task runs."""

    resources: Resources = Field(default_factory=Resources)
    accelerator: Accelerator | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)


class Secret(Block):
    """A Kubernetes secret exposed to every task as environment variables: {ENV_VAR: secret key}."""

    name: str
    env: dict[str, str] = Field(min_length=1)
    optional: bool = False


class Deploy(Block):
    namespace: str = "default"


class Cluster(Block):
    parallelism: int = Field(2, ge=1, description="training tasks of the grid that run at once")
    train: Pool = Field(default_factory=Pool)
    cpu: Pool = Field(default_factory=Pool, description="every task but training")
    secrets: list[Secret] = Field(default_factory=list)
    deploy: Deploy = Field(default_factory=Deploy)


def load(path: str | Path | None = None) -> Cluster:
    """Validate a cluster settings file (default pipelines/cluster.yaml); errors name the key."""
    path = Path(path) if path else DEFAULT
    if not path.is_file():
        raise ConfigError(f"{path}: no such cluster settings file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Cluster.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            if error["type"] == "extra_forbidden":
                problems.append(f"{where}: unknown key")
            else:
                problems.append(f"{where}: {error['msg']}")
        raise ConfigError(f"{path}: " + "; ".join(problems)) from None
