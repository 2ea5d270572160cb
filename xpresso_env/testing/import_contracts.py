"""An import-linter contract type the built-in ones lack: "these modules may import only those".

import-linter's ``forbidden`` and ``protected`` contracts list what may NOT be imported, so a module
added to the core would be open to plugins until someone remembered to forbid it. Plugins are held
to an allow-list instead: the modules written for plugin authors (the builder SDK, the storage
protocol, the prober protocol, the hooks, the errors, the settings). Registered in ``.importlinter``
under ``contract_types``; checked by ``tests/core/test_layers.py`` and ``lint-imports``.
"""
from __future__ import annotations

from importlinter import Contract, ContractCheck, fields, output


class AllowListContract(Contract):
    """Direct imports from ``source_modules`` (and their descendants) into ``within`` must land in
    one of ``allowed_modules`` (each taken as a package: its descendants are allowed too).

    Options: ``source_modules``, ``within`` (the package the allow-list governs), ``allowed_modules``.
    """

    type_name = "allow_list"

    source_modules = fields.ListField(subfield=fields.ModuleField())
    within = fields.ModuleField()
    allowed_modules = fields.ListField(subfield=fields.ModuleField())

    def check(self, graph, verbose: bool) -> ContractCheck:
        within = self.within.name  # type: ignore[attr-defined]
        allowed = [m.name for m in self.allowed_modules]  # type: ignore[attr-defined]
        sources: set[str] = set()
        for module in self.source_modules:  # type: ignore[attr-defined]
            sources.add(module.name)
            sources.update(graph.find_descendants(module.name))
        illegal = []
        for importer in sorted(sources):
            for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                if imported != within and not imported.startswith(within + "."):
                    continue
                if any(imported == a or imported.startswith(a + ".") for a in allowed):
                    continue
                lines = tuple(d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported))
                illegal.append((importer, imported, lines))
        return ContractCheck(kept=not illegal, metadata={"illegal": illegal})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for importer, imported, lines in check.metadata["illegal"]:
            output.print_error(f"- {importer} -> {imported} (l.{', '.join(map(str, lines))}) is not in the allow-list",
                               bold=False)
            output.new_line()
