"""Exports and imports of topics as files (air gaps, backups): ``kmc export``, ``kmc import``.

    from kmc.archive import ExportOptions, ImportOptions, export_topics, import_archive

    report = export_topics(cluster, Path("backup"), ExportOptions(topics=("orders",)))   # the next part
    report = import_archive(Path("backup"), other_cluster, ImportOptions(rename="{topic}.restored"))
    report.failure()   # ArchiveError (exit 9) when a damaged partition stopped at its last good batch

The format is documented in docs/export-format.md (kmc/archive/format.py). Library code: no printing.
"""

from kmc.archive.export import ExportOptions, ExportProgress, ExportReport, export_topics
from kmc.archive.format import FORMAT_VERSION, ArchiveError, Manifest, list_parts
from kmc.archive.importer import ImportOptions, ImportProgress, ImportReport, import_archive

__all__ = [
    "FORMAT_VERSION",
    "ArchiveError",
    "ExportOptions",
    "ExportProgress",
    "ExportReport",
    "ImportOptions",
    "ImportProgress",
    "ImportReport",
    "Manifest",
    "export_topics",
    "import_archive",
    "list_parts",
]
