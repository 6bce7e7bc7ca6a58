"""Who may import whom, read from the source with the standard library's `ast`.

Layers, from the bottom up:

- ``events``: the public contract; it imports nothing from ``services``.
- ``services.common``: settings, errors and the adapters every service shares (storage,
  messaging, web); it imports no service (billing, payment, portal, the PayFiP simulator)
  and not the composition root.
- a service's domain (``services/*/domain.py``): pure Python; from the project it imports
  only ``events``, ``services.common.errors`` and domain modules.
- the services' other modules (application, projections, integration, schemas, web…): they
  never import the composition root.
- the composition root (``services.bootstrap``, ``services.cli``, ``services.run``): on top.

Every import counts, at the top of a module or inside a function, so an import circle
hidden by a late import is found too.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("events", "services")
COMPOSITION_ROOT = ("services.bootstrap", "services.cli", "services.run")
SERVICES = ("services.billing", "services.payment", "services.portal", "services.payfip_sim")
DOMAIN_MAY_IMPORT = ("events", "services.common.errors")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imported(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project's modules one module imports (a package's `from p import m` names p.m)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                whole = f"{base}.{alias.name}"
                found.add(whole if whole in modules else base)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imported(path, name, modules) for name, path in modules.items()}


def under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def circles(graph: dict[str, set[str]]) -> Iterator[list[str]]:
    """Each import circle once, as the path that closes it (Tarjan's components would name
    them all; one path each is what a developer needs to break it)."""
    done: set[str] = set()

    def visit(node: str, path: list[str], on_path: set[str]) -> Iterator[list[str]]:
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_path:
                yield [*path[path.index(nxt):], nxt]
            elif nxt not in done and nxt in graph:
                yield from visit(nxt, [*path, nxt], on_path | {nxt})
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            yield from visit(start, [start], {start})


def layer_breaches(graph: dict[str, set[str]]) -> list[str]:
    breaches = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            why = None
            if under(module, "events") and under(target, "services"):
                why = "events/ imports nothing from services/"
            elif under(module, "services.common") and under(target, *SERVICES,
                                                             *COMPOSITION_ROOT):
                why = "services.common imports no service and not the composition root"
            elif (module.endswith(".domain") and under(target, "services")
                  and not under(target, *DOMAIN_MAY_IMPORT)
                  and not target.endswith(".domain")):
                why = "a domain imports only events, services.common.errors and domains"
            elif under(module, *SERVICES, "services.common") and under(target,
                                                                      *COMPOSITION_ROOT):
                why = "only the composition root imports the composition root"
            if why:
                breaches.append(f"{module} imports {target}: {why}")
    return breaches


def test_no_import_circle_in_services_or_events() -> None:
    assert list(circles(import_graph())) == []


def test_no_module_imports_a_layer_above_it() -> None:
    assert layer_breaches(import_graph()) == []


def test_the_checks_see_what_they_are_meant_to_see() -> None:
    """The rules, fed a made-up graph: each breach and the circle are named."""
    graph = {
        "events.envelope": {"services.common.settings"},
        "services.common.storage.chain": {"services.common.storage.persistence"},
        "services.common.storage.persistence": {"services.common.settings"},
        "services.common.settings": {"services.common.storage.chain"},
        "services.common.web.auth": {"services.billing.web"},
        "services.billing.domain": {"services.billing.application", "events.formats",
                                    "services.common.errors"},
        "services.billing.web": {"services.bootstrap"},
    }
    assert list(circles(graph)) == [[
        "services.common.settings", "services.common.storage.chain",
        "services.common.storage.persistence", "services.common.settings",
    ]]
    assert [b.split(":")[0] for b in layer_breaches(graph)] == [
        "events.envelope imports services.common.settings",
        "services.billing.domain imports services.billing.application",
        "services.billing.web imports services.bootstrap",
        "services.common.web.auth imports services.billing.web",
    ]


# The modules that turn the environment into a settings object; everything else takes one.
SETTINGS_READERS = ("services.common.settings", "services.portal.settings",
                    "services.backoffice.settings", "services.payfip_sim.model")


def raw_setting_reads() -> list[str]:
    """Modules that read a setting by name (`services.common.settings.get`), not through a
    settings object."""
    found = []
    for name, path in sorted(project_modules().items()):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.ImportFrom) and node.module == "services.common.settings"
                    and any(alias.name == "get" for alias in node.names)
                    and name not in SETTINGS_READERS):
                found.append(name)
    return found


def test_every_setting_is_read_through_a_settings_object() -> None:
    assert raw_setting_reads() == []
