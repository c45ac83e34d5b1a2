"""Great Expectations Data Docs for the gates: each gate run stores its validation results in the file-based GX
project ``gx/`` and rebuilds their HTML pages in ``reports/gx/`` (open ``reports/gx/index.html``).

- ``gx/great_expectations.yml`` (committed) is GX's own project file, created once by ``open_project`` with GX's API:
  every store under ``gx/uncommitted/`` (ignored by ``gx/.gitignore``, which GX writes), analytics off, one Data Docs
  site, ``local_site``, written to ``reports/gx/`` (ignored: generated). The gate stages list the file in their deps.
- Only validation results are stored: the suites are code (``stages/gates/<stage>.py``), and the data sources stay
  in the gate's ephemeral context, so a run never rewrites the committed file.
- One suite per checked frame, ``<stage>.<frame>`` (``select.rows``, ``select.rows.dtypes``); a run replaces the
  stage's earlier results, so the store and the site keep the latest result per suite and do not grow run after run.
- ``reports/gx/latest/<suite>.html`` forwards to the suite's latest page, whose path holds the run's time: the HTML
  report links there, so that it stays the same from run to run.
- ``reports/gx/`` is written by all eight gate stages, so it is no one stage's DVC out; two gates publishing at
  once in one repo take turns on an exclusive ``flock`` (``gx/uncommitted/gates.lock``).

Publishing costs about 0.1-0.3 s beside GX's import: only this run's pages and the index are rendered.
"""

from __future__ import annotations

import fcntl
import html
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from distill.io import write_text

if TYPE_CHECKING:
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.data_context import FileDataContext

GX_DIR = Path("gx")  # the GX project, relative to the repo root
CONFIG = GX_DIR / "great_expectations.yml"
LOCK = GX_DIR / "uncommitted/gates.lock"
SITE = "local_site"
DOCS_DIR = Path("reports/gx")  # the site's folder; index.html is its home page
LATEST_DIR = DOCS_DIR / "latest"  # <suite>.html: a stable address that forwards to the suite's latest page
SCAFFOLD = ("expectations", "checkpoints", "validation_definitions", "plugins")  # GX's defaults, unused here


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (waiting for it). The kernel releases it when the holder dies, even by
    kill -9; the file is never deleted (a waiter would otherwise lock a file the next one does not see)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def store(base_directory: str) -> dict[str, str]:
    return {"class_name": "TupleFilesystemStoreBackend", "base_directory": base_directory}


def create_project(root: Path) -> None:
    """``root/gx/great_expectations.yml`` from GX's scaffold, configured for the gates (see the module docstring)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=root)  # scaffolds gx/, its .gitignore and the file
    stores = {"expectations_store": ("ExpectationsStore", "expectations"),
              "validation_results_store": ("ValidationResultsStore", "validations"),
              "checkpoint_store": ("CheckpointStore", "checkpoints"),
              "validation_definition_store": ("ValidationDefinitionStore", "validation_definitions")}
    context.variables.stores = {  # everything generated under uncommitted/, which GX's .gitignore excludes
        name: {"class_name": class_name, "store_backend": store(f"uncommitted/{folder}/")}
        for name, (class_name, folder) in stores.items()}
    context.variables.plugins_directory = None
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.variables.data_docs_sites = {SITE: {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": store(os.path.relpath(DOCS_DIR, GX_DIR) + "/"),  # relative to gx/
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "site_section_builders": {"expectations": "None", "profiling": "None"},  # validation results only
    }}
    context.enable_analytics(False)  # also saves the variables to the file
    for name in SCAFFOLD:
        shutil.rmtree(root / GX_DIR / name, ignore_errors=True)


def open_project(root: Path = Path()) -> FileDataContext:
    """The file context in ``root/gx``, created first when ``root/gx/great_expectations.yml`` is missing."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    if not (root / CONFIG).exists():
        create_project(root)
    return gx.get_context(mode="file", project_root_dir=root)


def page_path(context: FileDataContext, key: Any, root: Path) -> str:
    """The page of ``key`` (or the index for None) relative to ``root``: ``reports/gx/validations/...html``."""
    [site] = context.get_docs_sites_urls(resource_identifier=key, site_name=SITE, only_if_exists=False)
    path = Path(unquote(urlparse(site["site_url"]).path)).resolve()
    return path.relative_to(root.resolve()).as_posix()


def publish(stage: str, results: dict[str, ExpectationSuiteValidationResult], root: Path = Path()) -> dict[str, Any]:
    """Store ``results`` (suite name -> GX result) as the latest of gate ``stage`` and rebuild their Data Docs pages
    and the index. Returns ``{"index": path, "pages": {suite: path}}``, paths relative to ``root``."""
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    run_id = RunIdentifier(run_name=f"gate-{stage}", run_time=datetime.now(UTC))
    with locked(root / LOCK):
        context = open_project(root)
        results_store = context.validation_results_store
        earlier = [key for key in results_store.list_keys()
                   if key.expectation_suite_identifier.name.startswith(f"{stage}.")]
        keys = {}
        for suite, result in results.items():
            result.meta["run_id"] = run_id  # the page's run name and time
            key = ValidationResultIdentifier(ExpectationSuiteIdentifier(suite), run_id, result.asset_name or suite)
            results_store.set(key, result)
            keys[suite] = key
        for key in earlier:  # the index build then deletes their pages: no page outlives its result
            results_store.remove_key(key)
        context.build_data_docs(site_names=[SITE], resource_identifiers=list(keys.values()))
        index = page_path(context, None, root)
        # suite a.b is stored as folders a/b/<run name>/<run time>/: drop the emptied folders of earlier runs
        prune(Path(results_store.store_backend.full_base_directory) / stage)
        prune(root / Path(index).parent / "validations" / stage)
        pages = {suite: page_path(context, key, root) for suite, key in keys.items()}
        for suite, page in pages.items():
            forward(root / LATEST_DIR / f"{suite}.html", root / page)
        return {"index": index, "pages": pages}


def forward(stub: Path, page: Path) -> None:
    """A page at ``stub`` that forwards the browser to ``page`` (a meta refresh, no script): the report links to it,
    so that the report stays byte-identical from run to run while each run's page has the run's time in its path."""
    target = html.escape(os.path.relpath(page, stub.parent).replace(os.sep, "/"))
    write_text(f'<!doctype html>\n<meta charset="utf-8"><meta http-equiv="refresh" content="0; url={target}">\n'
               f'<title>{html.escape(stub.stem)}</title><a href="{target}">{html.escape(stub.stem)}</a>\n', stub)


def latest_page(suite: str, root: Path = Path()) -> str | None:
    """The stable address of ``suite``'s latest Data Docs page (``forward``), relative to ``root``; None if no gate
    run has published one."""
    stub = LATEST_DIR / f"{suite}.html"
    return stub.as_posix() if (root / stub).is_file() else None


def current_page(suite: str, root: Path = Path()) -> str | None:
    """The Data Docs page of ``suite``'s latest result (a run keeps one), relative to ``root``; None if there is
    none. Its path holds the run's time, so reports name suites and this finds the page when it is needed."""
    stage = suite.split(".", 1)[0]
    folder = root / DOCS_DIR / "validations" / Path(*suite.split(".")) / f"gate-{stage}"
    pages = sorted(folder.glob("*/*.html"))
    return pages[-1].relative_to(root).as_posix() if pages else None


def prune(folder: Path) -> None:
    """Remove the empty folders under ``folder``, deepest first."""
    for path, _, _ in os.walk(folder, topdown=False):  # children before their parent
        if not os.listdir(path):
            os.rmdir(path)
