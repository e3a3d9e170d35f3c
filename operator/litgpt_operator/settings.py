"""The operator's settings: one typed object from `LITGPT_OPERATOR_*` environment variables.

Read and validated once at start-up (`Settings.from_env`, pydantic-settings); a bad value stops
the operator with one message naming the variable. Lists are comma-separated; structured values
are JSON. The Helm chart sets these from its values.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal, Mapping, Optional

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from litgpt_operator.api.common import GROUP, ResourceRequirements

ENV_PREFIX = "LITGPT_OPERATOR_"
# The variables Kubernetes injects for each Service of the pod's namespace (enableServiceLinks):
# <SVC>_SERVICE_HOST, <SVC>_SERVICE_PORT[_<PORT NAME>], <SVC>_PORT=tcp://..., <SVC>_PORT_<n>_<PROTO>[_...].
SERVICE_LINK_NAME = re.compile(r"_SERVICE_(HOST|PORT(_\w+)?)$|_PORT_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?$")
SERVICE_LINK_VALUE = re.compile(r"^(tcp|udp|sctp)://")

# kopf persistence, set explicitly so that upgrades of kopf never change where state lives.
FINALIZER = f"{GROUP}/finalizer"
ANNOTATIONS_PREFIX = GROUP
LAST_HANDLED_ANNOTATION = "last-handled-configuration"
FIELD_MANAGER = "litgpt-operator"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"  # a Kubernetes storage quantity


class SettingsError(ValueError):
    """A setting from the environment is invalid; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    runtime_image: str = Field(
        "ghcr.io/litgpt-operator/litgpt:0.1.0", min_length=1, description="Image of the litgpt runtime pods."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Secrets for pulling the runtime image.")
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Namespaces to watch (patterns allowed); empty means cluster-wide."
    )
    log_format: Literal["plain", "full", "json"] = "plain"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    default_resources: ResourceRequirements = Field(
        default_factory=lambda: ResourceRequirements(requests={"cpu": "1", "memory": "2Gi"}),
        description="Resources of runtime containers whose object sets none.",
    )
    run_as_user: int = Field(1000, ge=1, description="Non-root UID of runtime pods.")
    run_as_group: int = Field(1000, ge=1)
    fs_group: int = Field(1000, ge=1, description="Group owning mounted volumes, so the non-root user can write.")
    tmp_size_limit: str = Field("10Gi", pattern=QUANTITY, description="sizeLimit of runtime pods' /tmp (emptyDir).")
    shm_size_limit: str = Field("2Gi", pattern=QUANTITY,
                                description="sizeLimit of training pods' memory-backed /dev/shm.")
    resume_budget: int = Field(
        10, ge=0, le=1000,
        description="Evictions (or lost nodes) a training Job resumes from; one more stops it as failed.")
    hf_endpoint: Optional[str] = Field(None, description="HF_ENDPOINT for download pods (a Hub mirror).")
    retry_delay_seconds: float = Field(
        10.0, gt=0, description="First delay before re-checking a wait (doubling per wait, up to 5 minutes).")
    workers: int = Field(8, ge=1, le=64, description="Threads reconciling objects (concurrent reconciles).")
    claim_bind_timeout_seconds: float = Field(
        600.0, gt=0, description="How long a Job's pods may wait for a claim to bind (or exist) before the Job "
                                 "is stopped and its object Failed with reason ClaimNotBound.")
    log_tail_lines: int = Field(20, ge=0, le=200, description="Pod log lines quoted in failure messages.")
    watch_server_timeout_seconds: Optional[int] = Field(
        None, ge=1, description="Server-side timeout of kopf's watch requests (short in tests)."
    )
    standalone: bool = Field(True, description="Run without kopf peering (one replica).")
    health_port: Optional[int] = Field(8080, ge=1, le=65535, description="Port of the /healthz liveness endpoint.")
    peering_name: str = Field("litgpt-operator", min_length=1)
    peering_lifetime_seconds: int = Field(
        60, ge=10, le=3600,
        description="How long a replica's peering keep-alive counts: a standby takes over at most this long "
                    "after the active replica was last heard of (it renews every lifetime minus 5-10 s).")
    # Production features (issue 5; the Helm chart sets them).
    metrics_port: Optional[int] = Field(None, ge=1, le=65535, description="Port of the Prometheus /metrics endpoint; unset: no endpoint.")
    gpu_memory_gb: Optional[float] = Field(
        None, gt=0, description="GPU memory (GiB) the fit check assumes when an object has no litgpt.dev/gpu-memory-gb annotation."
    )

    @field_validator("namespaces", "image_pull_secrets", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **_sources):
        # Only what `from_env` passes: its environment is the one given, not always os.environ.
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> "Settings":
        """The settings in `env` (default: this process's environment)."""
        env = os.environ if env is None else env
        known = {ENV_PREFIX + n.upper() for n in cls.model_fields}
        linked = sorted(k for k, v in env.items() if k in known and SERVICE_LINK_VALUE.match(v or ""))
        if linked:
            raise SettingsError(
                f"{', '.join(linked)} holds a Kubernetes service link ({env[linked[0]]}), not a setting: a Service "
                f"named like the variable's prefix exists in this namespace. Set enableServiceLinks: false on the "
                "operator's pod (the chart does) or rename that Service.")
        # Service links of other Services whose names start like ours are not settings (and not typos).
        unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known
                         and not SERVICE_LINK_NAME.search(k))
        if unknown:
            raise SettingsError(f"unknown setting(s) {', '.join(unknown)}; known: "
                                + ", ".join(ENV_PREFIX + n.upper() for n in cls.model_fields))
        source = EnvSettingsSource(cls)
        source.env_vars = {k.lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)}
        try:
            return cls(**source())
        except SourceError as error:  # a structured value that is not JSON
            field = re.search(r'field "(\w+)"', str(error))
            name = ENV_PREFIX + field.group(1).upper() if field else "a structured setting"
            raise SettingsError(f"invalid operator settings: {name}: not valid JSON") from None
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                field = str(error["loc"][0]) if error["loc"] else "?"
                problems.append(f"{ENV_PREFIX}{field.upper()}: {error['msg']}")
            raise SettingsError("invalid operator settings: " + "; ".join(problems)) from None


_current: Optional[Settings] = None


def current() -> Settings:
    """The settings the running operator validated at start-up (read from the env on first use)."""
    global _current
    if _current is None:
        _current = Settings.from_env()
    return _current


def install(settings: Settings) -> None:
    """Make `settings` the running operator's settings (start-up, tests)."""
    global _current
    _current = settings
