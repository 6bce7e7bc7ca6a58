"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

No engine runs where the tests run, so nothing here starts a container. What can rot
unnoticed is checked instead: each Régie container's command must be one the project really
has (parsed by the `regie` parser or gunicorn's own, the app factory importable), each
variable it is given must be a declared setting, since an unknown name is silently ignored,
and it is given the secrets it uses and no other.
Each check is a function returning the problems it found, so the tests can feed it wrong
input and see it complain.
"""

import contextlib
import importlib
import io
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from gunicorn.config import Config as GunicornConfig

from services.cli import build_parser
from services.common.settings import SETTINGS, is_secret
from services.run import SERVED

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

FACTORY = re.compile(r"^(?P<module>[A-Za-z_][\w.]*):(?P<attr>[A-Za-z_]\w*)\(\)$")
# A secret is required from the operator's environment, ${NAME:?why}, or falls back on
# another that is: ${NAME:-${OTHER:?why}}. Never a default or a literal, which would ship.
REQUIRED_SECRET = re.compile(r"^\$\{(?P<name>\w+)(?P<nested>:-\$\{\w+)?:\?[^{}$]+\}(?(nested)\})$")
ALL_INTERFACES = ("0.0.0.0:", "[::]:")
REGIE_ENV = {
    "PERSISTENCE_MODULE": "eventsourcing.postgres",
    "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
}
POSTGRES_ENV = (
    "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DBNAME", "POSTGRES_USER", "POSTGRES_PASSWORD",
)
# Each container's secrets, and no other: the portal and the simulator keep no events.
STORE_PART_SECRETS = frozenset({"POSTGRES_PASSWORD"})
# Secrets a part may be given, from the operator's environment only, but may run without:
# without a chain key the event hash chain is plain SHA-256.
OPTIONAL_SECRETS = frozenset({"REGIE_CHAIN_KEY"})
# And those of one container: the scheduler sends mail, through a server that may need no
# login.
OPTIONAL_SECRETS_OF: dict[str, frozenset[str]] = {"scheduler": frozenset({"SMTP_PASSWORD"})}
SECRETS_OF: dict[str, frozenset[str]] = {
    "billing-api": STORE_PART_SECRETS | {"BILLING_TOKENS"},
    "payment-api": STORE_PART_SECRETS | {"PAYMENT_TOKENS"},
    "billing-relay": STORE_PART_SECRETS,
    "payment-consumer": STORE_PART_SECRETS,
    "payment-relay": STORE_PART_SECRETS,
    "billing-consumer": STORE_PART_SECRETS,
    "reconciler": STORE_PART_SECRETS,
    "scheduler": STORE_PART_SECRETS,
    "portal": frozenset({"PORTAL_PAYMENT_TOKEN", "PORTAL_SECRET_KEY"}),
    "backoffice": frozenset({"BACKOFFICE_TOKEN", "BACKOFFICE_SECRET_KEY"}),
    "payfip-sim": frozenset(),
}


def load_compose(path: Path = COMPOSE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name} is not a mapping"
    return data


def uses_project_image(service: dict[str, Any]) -> bool:
    build = service.get("build")
    if isinstance(build, dict):
        build = build.get("context")
    return build in (".", "./")


def project_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service for name, service in compose["services"].items()
        if uses_project_image(service)
    }


def command_argv(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return {str(k): None if v is None else str(v) for k, v in env.items()}
    pairs = (str(item).partition("=") for item in env)
    return {name: (value if sep else None) for name, sep, value in pairs}


def regie_script_target() -> str:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return str(pyproject["project"]["scripts"].get("regie", ""))


def regie_command_problems(argv: list[str]) -> list[str]:
    # build_parser() is only the right judge if `regie` still runs services.cli:main.
    if regie_script_target() != "services.cli:main":
        return ["the `regie` script no longer runs services.cli:main"]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = build_parser().parse_args(argv[1:])
    except SystemExit:
        return [f"{shlex.join(argv)!r} does not parse: {stderr.getvalue().strip()}"]
    if not callable(getattr(args, "func", None)):
        return [f"{shlex.join(argv)!r} names no subcommand"]
    return []


def gunicorn_command_problems(argv: list[str]) -> list[str]:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = GunicornConfig().parser().parse_args(argv[1:])
    except SystemExit:
        return [f"{shlex.join(argv)!r}: gunicorn refuses it: {stderr.getvalue().strip()}"]
    problems = []
    # 127.0.0.1 inside a container is unreachable from the other containers and the host.
    if not args.bind or not all(b.startswith(ALL_INTERFACES) for b in args.bind):
        problems.append(f"{shlex.join(argv)!r} must bind 0.0.0.0:PORT, not {args.bind}")
    if not args.control_socket_disable:
        problems.append(f"{shlex.join(argv)!r} lacks --no-control-socket")
    if len(args.args) != 1:
        return [*problems, f"{shlex.join(argv)!r} must name exactly one app, got {args.args}"]
    match = FACTORY.match(args.args[0])
    if match is None:
        return [*problems, f"{args.args[0]!r} is not of the form module:factory()"]
    try:
        module = importlib.import_module(match["module"])
    except ImportError as e:
        return [*problems, f"{args.args[0]!r}: cannot import {match['module']}: {e}"]
    if not callable(getattr(module, match["attr"], None)):
        problems.append(f"{args.args[0]!r}: {match['module']} has no callable {match['attr']}")
    return problems


def served_problems(name: str, argv: list[str]) -> list[str]:
    """A web part must be served with the workers, threads and sockets `regie run` gives it."""
    if name not in SERVED or not argv or argv[0] != "gunicorn":
        return []
    args = GunicornConfig().parser().parse_args(argv[1:])
    ours = GunicornConfig().parser().parse_args(SERVED[name].argv("0.0.0.0:1", "app"))
    # gunicorn's parser leaves a flag not given as None.
    got = (args.workers, args.threads, bool(args.reuse_port))
    wanted = (ours.workers, ours.threads, bool(ours.reuse_port))
    if got != wanted:
        return [f"{name}: --workers {got[0]} --threads {got[1]} --reuse-port {got[2]}, but "
                f"`regie run` serves it with --workers {wanted[0]} --threads {wanted[1]} "
                f"--reuse-port {wanted[2]} (services/run.py, SERVED)"]
    return []


def command_problems(argv: list[str]) -> list[str]:
    if not argv:
        return ["no command: the image's default only lists the settings"]
    if argv[0] == "regie":
        return regie_command_problems(argv)
    if argv[0] == "gunicorn":
        return gunicorn_command_problems(argv)
    return [f"{argv[0]!r} is not an entry point of the project (regie or gunicorn)"]


def env_problems(env: dict[str, str | None],
                 secrets: frozenset[str] = STORE_PART_SECRETS,
                 own_optional: frozenset[str] = frozenset()) -> list[str]:
    problems = [f"{name} is not a Régie setting" for name in env if name not in SETTINGS]
    if "POSTGRES_PASSWORD" in secrets:  # a part that keeps events
        for name, want in REGIE_ENV.items():
            if env.get(name) != want:
                problems.append(f"{name} must be {want!r}, not {env.get(name)!r}")
        problems += [f"{name} is not set" for name in POSTGRES_ENV if not env.get(name)]
    given = {name for name in env if is_secret(name)}
    optional = own_optional | (OPTIONAL_SECRETS if "POSTGRES_PASSWORD" in secrets
                               else frozenset())
    problems += [f"{name} is given but not used here"
                 for name in sorted(given - secrets - optional)]
    for name in sorted(given & optional):
        if not re.fullmatch(rf"\$\{{{name}:-[^}}]*\}}", env.get(name) or ""):
            problems.append(f"{name} must come from ${{{name}:-...}}")
    problems += [f"{name} is not set" for name in sorted(secrets - given)]
    for name in sorted(given & secrets):
        match = REQUIRED_SECRET.match(env.get(name) or "")
        if match is None or match["name"] != name:
            problems.append(f"{name} must come from ${{{name}:?...}}")
    return problems


def dependency_problems(compose: dict[str, Any], name: str) -> list[str]:
    services = compose["services"]
    depends = services[name].get("depends_on") or {}
    if not isinstance(depends, dict):
        return [f"{name}: depends_on must give a condition for each service"]
    problems = []
    for other, spec in depends.items():
        condition = (spec or {}).get("condition")
        if other not in services:
            problems.append(f"{name} depends on {other}, which is not a service")
        elif condition not in ("service_healthy", "service_started"):
            problems.append(f"{name} -> {other}: condition {condition!r}")
        elif condition == "service_healthy" and "healthcheck" not in services[other]:
            problems.append(f"{name} waits for {other} to be healthy, which has no healthcheck")
    return problems


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    lines = (line.strip() for line in joined.splitlines())
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.partition(" ") for line in lines if line and line[0] != "#")
    ]


def dockerfile_problems(text: str) -> list[str]:
    instructions = dockerfile_instructions(text)
    problems = []
    froms = [arg.split()[0] for word, arg in instructions if word == "FROM"]
    if not froms or any(not image.startswith("python:3.11-slim") for image in froms):
        problems.append(f"every stage must be python:3.11-slim, got {froms}")
    if not any(word == "COPY" and "pyproject.toml" in arg for word, arg in instructions):
        problems.append("pyproject.toml is never copied in")
    installs = [
        shlex.split(arg) for word, arg in instructions
        if word == "RUN" and re.search(r"\bpip install\b", arg)
    ]
    if not any("." in argv for argv in installs):
        problems.append("no `pip install .` of the project")
    if any(re.search(r"\[dev\]|(^|\s)(-e|--editable)\s", " ".join(a)) for a in installs):
        problems.append("the image must not install dev extras or an editable checkout")
    users = [arg for word, arg in instructions if word == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the image must end on a non-root USER")
    return problems


# -- the real files ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def test_compose_parses_without_the_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose
    expected = {"kafka", "postgres", "billing-api", "payment-api", "billing-relay",
                "payment-consumer"}
    assert expected <= set(compose["services"])


def test_every_project_container_runs_a_real_entry_point(compose: dict[str, Any]) -> None:
    services = project_services(compose)
    assert services, "no service builds the project image"
    problems = {name: command_problems(command_argv(s)) for name, s in services.items()}
    assert {name: p for name, p in problems.items() if p} == {}


def test_web_parts_are_served_as_regie_run_serves_them(compose: dict[str, Any]) -> None:
    services = project_services(compose)
    assert set(SERVED) <= set(services)
    problems = [p for name, service in services.items()
                for p in served_problems(name, command_argv(service))]
    assert problems == []


def test_a_web_part_served_otherwise_is_reported() -> None:
    argv = shlex.split("gunicorn --bind 0.0.0.0:8002 --workers 1 --threads 8 "
                       "--no-control-socket 'services.bootstrap:payment_api()'")
    assert served_problems("payment-api", argv) == [
        "payment-api: --workers 1 --threads 8 --reuse-port False, but `regie run` serves it "
        f"with --workers {SERVED['payment-api'].workers} --threads "
        f"{SERVED['payment-api'].threads} --reuse-port True (services/run.py, SERVED)"]
    # Several workers, each its own socket: the same workers on one shared socket is not it.
    shared = shlex.split("gunicorn --bind 0.0.0.0:8002 --workers 2 --threads 4 "
                         "--no-control-socket 'services.bootstrap:payment_api()'")
    assert served_problems("payment-api", shared) != []
    assert served_problems("billing-relay", ["regie", "relay", "billing"]) == []


def test_every_part_of_the_flow_has_its_container(compose: dict[str, Any]) -> None:
    commands = [command_argv(s) for s in project_services(compose).values()]
    for command in (["regie", "relay", "billing"], ["regie", "consume", "payment"],
                    ["regie", "relay", "payment"], ["regie", "consume", "billing"],
                    ["regie", "reconcile"]):
        assert command in commands
    apps = {argv[-1] for argv in commands if argv and argv[0] == "gunicorn"}
    assert apps == {"services.bootstrap:billing_api()", "services.bootstrap:payment_api()",
                    "services.payfip_sim.app:create_app()", "services.portal.web:create_app()",
                    "services.backoffice.web:create_app()"}


def test_project_containers_get_only_declared_settings(compose: dict[str, Any]) -> None:
    assert set(project_services(compose)) == set(SECRETS_OF)
    problems = {
        name: env_problems(environment(s), SECRETS_OF[name],
                           OPTIONAL_SECRETS_OF.get(name, frozenset()))
        for name, s in project_services(compose).items()
    }
    assert {name: p for name, p in problems.items() if p} == {}


def test_project_containers_restart_and_wait_for_what_they_need(
    compose: dict[str, Any],
) -> None:
    for name, service in project_services(compose).items():
        assert service.get("restart") == "unless-stopped", name
        # The PayFiP simulator stands alone: it needs nothing of ours.
        assert service.get("depends_on") or name == "payfip-sim", (
            f"{name} starts before what it needs")
        assert dependency_problems(compose, name) == []


def test_kafka_is_a_single_kraft_node_advertised_as_kafka_9092(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    env = environment(kafka)
    assert kafka["image"] == "apache/kafka:3.9.0"
    assert set((env.get("KAFKA_PROCESS_ROLES") or "").split(",")) == {"broker", "controller"}
    assert env.get("KAFKA_ADVERTISED_LISTENERS") == "PLAINTEXT://kafka:9092"
    voters = env.get("KAFKA_CONTROLLER_QUORUM_VOTERS") or ""
    assert voters.startswith(f"{env.get('KAFKA_NODE_ID')}@"), "the node must vote for itself"
    assert "healthcheck" in kafka


def test_postgres_holds_the_regie_database(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    env = environment(postgres)
    assert postgres["image"] == "postgres:16"
    assert env.get("POSTGRES_DB") == "regie"
    assert "healthcheck" in postgres
    for name, service in project_services(compose).items():
        if "POSTGRES_PASSWORD" not in SECRETS_OF[name]:
            continue
        assert environment(service).get("POSTGRES_DBNAME") == env["POSTGRES_DB"], name
        assert environment(service).get("POSTGRES_USER") == env["POSTGRES_USER"], name


def test_the_payment_api_and_the_reconciler_share_their_metrics_folder(
    compose: dict[str, Any],
) -> None:
    """The payment API's /metrics adds up the reconciler's PayFiP calls (multiprocess mode)."""
    folders = set()
    for name in ("payment-api", "reconciler"):
        service = compose["services"][name]
        folder = environment(service).get("PROMETHEUS_MULTIPROC_DIR")
        assert folder, f"{name} has no PROMETHEUS_MULTIPROC_DIR"
        assert f"payment-metrics:{folder}" in service.get("volumes", []), name
        folders.add(folder)
    assert len(folders) == 1
    assert "payment-metrics" in compose["volumes"]
    assert f"mkdir -p /home/regie/data {folders.pop()}" in DOCKERFILE.read_text()


def test_dockerfile_installs_the_project() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


# -- the checks themselves must be able to fail --------------------------------------------


@pytest.mark.parametrize(
    ("command", "complaint"),
    [
        ("regie relay nothing", "does not parse"),
        ("regie frobnicate", "does not parse"),
        ("regie", "does not parse"),
        ("celery worker", "not an entry point"),
        ("", "no command"),
        ("gunicorn --bind 0.0.0.0:8001 --no-control-socket 'services.bootstrap:nope()'",
         "no callable nope"),
        ("gunicorn --bind 0.0.0.0:8001 --no-control-socket 'services.nowhere:create_app()'",
         "cannot import"),
        ("gunicorn --bind 0.0.0.0:8001 --no-control-socket services.billing.web",
         "module:factory()"),
        ("gunicorn --bind 0.0.0.0:8001 --no-such-flag 'services.bootstrap:billing_api()'",
         "gunicorn refuses"),
        ("gunicorn --bind 127.0.0.1:8001 --no-control-socket 'services.bootstrap:billing_api()'",
         "must bind 0.0.0.0"),
        ("gunicorn --bind 0.0.0.0:8001 'services.bootstrap:billing_api()'",
         "--no-control-socket"),
    ],
)
def test_a_wrong_command_is_reported(command: str, complaint: str) -> None:
    problems = command_problems(command_argv({"command": command}))
    assert any(complaint in p for p in problems), problems


def test_the_checked_commands_do_parse_when_right() -> None:
    good = "gunicorn --bind 0.0.0.0:8002 --no-control-socket 'services.bootstrap:payment_api()'"
    assert command_problems(shlex.split(good)) == []
    assert command_problems(["regie", "consume", "payment"]) == []


def test_a_wrong_environment_is_reported() -> None:
    env: dict[str, str | None] = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "KAFKA_BOOTSTRAP_SERVERS": "localhost:9092",
        "POSTGRES_HOST": "postgres",
        "REGIE_TOKEN": "${REGIE_TOKENS:?set it}",
        "DATABASE_URL": "postgresql://x",
        "BILLING_TOKENS": "abc:issuer",
        "PORTAL_SECRET_KEY": "${PORTAL_SECRET_KEY:?set it}",
    }
    problems = "\n".join(env_problems(env, frozenset({"POSTGRES_PASSWORD", "BILLING_TOKENS"})))
    for expected in (
        "REGIE_TOKEN is not a Régie setting", "DATABASE_URL is not a Régie setting",
        "PERSISTENCE_MODULE must be", "KAFKA_BOOTSTRAP_SERVERS must be",
        "POSTGRES_PASSWORD is not set", "BILLING_TOKENS must come from",
        "PORTAL_SECRET_KEY is given but not used here",
    ):
        assert expected in problems


@pytest.mark.parametrize("value", [
    "${PAYMENT_TOKENS:-${REGIE_TOKENS:?set one}}", "${PAYMENT_TOKENS:?set it}"])
def test_a_secret_the_operator_must_give_is_accepted(value: str) -> None:
    assert env_problems({"PAYMENT_TOKENS": value}, frozenset({"PAYMENT_TOKENS"})) == []


@pytest.mark.parametrize("value", [
    "${PAYMENT_TOKENS:-dev:operator}", "${PAYMENT_TOKENS}", "${REGIE_TOKENS:?set it}",
    "${PAYMENT_TOKENS:-${REGIE_TOKENS:?set one}"])
def test_a_secret_with_a_default_is_reported(value: str) -> None:
    assert env_problems({"PAYMENT_TOKENS": value}, frozenset({"PAYMENT_TOKENS"})) == [
        "PAYMENT_TOKENS must come from ${PAYMENT_TOKENS:?...}"]


def test_environment_lists_are_read_like_mappings() -> None:
    service = {"environment": ["REGIE_TOKENS=${REGIE_TOKENS:?x}", "NOT_A_SETTING"]}
    assert environment(service) == {"REGIE_TOKENS": "${REGIE_TOKENS:?x}", "NOT_A_SETTING": None}


def test_a_wrong_dependency_is_reported() -> None:
    compose = {"services": {
        "app": {"depends_on": {"db": {"condition": "service_healthy"}, "ghost": None}},
        "db": {},
    }}
    problems = "\n".join(dependency_problems(compose, "app"))
    assert "db to be healthy, which has no healthcheck" in problems
    assert "ghost, which is not a service" in problems
    assert dependency_problems({"services": {"a": {"depends_on": ["b"]}, "b": {}}}, "a")


def test_a_wrong_dockerfile_is_reported() -> None:
    bad = "FROM python:3.12\nCOPY . /app\nRUN pip install -e '.[dev]'\n"
    problems = "\n".join(dockerfile_problems(bad))
    for expected in ("python:3.11-slim", "pyproject.toml", "no `pip install .`", "dev extras",
                     "non-root USER"):
        assert expected in problems
    assert dockerfile_problems(bad + "USER root\n")[-1].endswith("non-root USER")


def test_the_chain_key_reaches_every_container_that_writes_or_verifies_events(
    compose: dict[str, Any],
) -> None:
    # A writer without the key would refuse to write after a keyed one, or the reverse.
    for name in ("billing-api", "payment-api", "billing-relay", "payment-consumer"):
        env = environment(compose["services"][name])
        assert "${REGIE_CHAIN_KEY" in str(env.get("REGIE_CHAIN_KEY")), name


def test_the_smtp_password_is_the_schedulers_alone_and_from_the_environment() -> None:
    env: dict[str, str | None] = {**REGIE_ENV, **dict.fromkeys(POSTGRES_ENV, "x"),
                                  "POSTGRES_PASSWORD": "${POSTGRES_PASSWORD:?set it}"}
    mine = OPTIONAL_SECRETS_OF["scheduler"]
    assert env_problems({**env, "SMTP_PASSWORD": "${SMTP_PASSWORD:-}"}, own_optional=mine) == []
    assert env_problems(env, own_optional=mine) == []
    assert env_problems({**env, "SMTP_PASSWORD": "hunter2"}, own_optional=mine) == [
        "SMTP_PASSWORD must come from ${SMTP_PASSWORD:-...}"]
    assert env_problems({**env, "SMTP_PASSWORD": "${SMTP_PASSWORD:-}"}) == [
        "SMTP_PASSWORD is given but not used here"]


def test_the_simulator_runs_only_in_the_dev_profile(compose: dict[str, Any]) -> None:
    # `docker compose up` alone never starts it; `--profile dev` does, and tells it it may.
    sim = compose["services"]["payfip-sim"]
    assert sim.get("profiles") == ["dev"]
    assert environment(sim).get("PAYFIP_SIM_ENABLED") == "1"
    others = {name for name, service in compose["services"].items() if name != "payfip-sim"
              and ("PAYFIP_SIM_ENABLED" in environment(service) or service.get("profiles"))}
    assert others == set()
