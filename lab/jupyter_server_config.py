"""JupyterLab for running the chapters locally (`make lab`; tests/test_lab.py uses it too).

Nothing here reaches the network: JupyterLab's news feed, its check for a newer release and
its PyPI extension manager are off (install packages into .venv with pip instead). The
chapters in book/ are the sources of the book, stored without outputs: saving a notebook
writes its cells (your edits) and not their outputs.
"""

import json
import warnings
from pathlib import Path

from jupyterlab.handlers.announcements import NeverCheckForUpdate

c = get_config()  # noqa: F821 (provided by Jupyter when it loads this file)

c.LabApp.news_url = None
c.LabApp.check_for_updates_class = NeverCheckForUpdate
c.LabApp.extension_manager = "readonly"
# settings/overrides.json: JupyterLab's defaults for this course (no news, no update check)
c.LabApp.app_settings_dir = str(Path(__file__).parent / "settings")


def strip_outputs(model, path, contents_manager, **kwargs):
    """Before a notebook is written: clear its code cells' outputs and execution counts and
    its saved widget state, and keep the kernel metadata the file had (JupyterLab writes its
    kernel's), so saving changes what you edited and nothing else (tests/test_lab.py)."""
    if model.get("type") != "notebook" or not model.get("content"):
        return
    notebook = model["content"]
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    metadata = notebook["metadata"]
    metadata.pop("widgets", None)
    # the file as it is on disk (the server's contents manager is asynchronous; hooks are not)
    stored = Path(contents_manager.root_dir, *path.strip("/").split("/"))
    if stored.is_file():
        stored = json.loads(stored.read_text(encoding="utf-8")).get("metadata", {})
        for key in ("kernelspec", "language_info"):
            metadata.pop(key, None)
            if key in stored:
                metadata[key] = stored[key]


c.FileContentsManager.pre_save_hook = strip_outputs
# Jupyter applies this file twice (as the server's and as JupyterLab's configuration), and the
# second time the hook replacing itself warns.
warnings.filterwarnings("ignore", message=r"Overriding existing pre_save_hook \(strip_outputs\)")
