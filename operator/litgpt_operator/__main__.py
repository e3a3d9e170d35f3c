"""`litgpt-operator`: validate the settings, then run the kopf handlers.

    LITGPT_OPERATOR_NAMESPACES=team-a,team-b litgpt-operator

Settings come from `LITGPT_OPERATOR_*` variables (see litgpt_operator.settings); a bad value
stops here with one message naming it, before anything talks to the cluster.
"""

from __future__ import annotations

import sys

from litgpt_operator.settings import Settings, SettingsError, install


def main(argv: list[str] | None = None) -> None:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    install(settings)

    import kopf

    import litgpt_operator.handlers  # noqa: F401  (registers the handlers)

    kopf.configure(verbose=settings.log_level == "DEBUG", log_format=kopf.LogFormat[settings.log_format.upper()])
    kopf.run(
        standalone=settings.standalone,
        namespaces=settings.namespaces,
        clusterwide=settings.clusterwide,
        # A peering name makes kopf wait for its peering CRD: give it only when peering is on.
        peering_name=None if settings.standalone else settings.peering_name,
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None,
    )


if __name__ == "__main__":
    main()
