"""``bench new-method NAME``: write a working method skeleton and its test."""

from __future__ import annotations

import re
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

from harness.registry import METHODS
from harness.utils.atomic import write_text_atomic
from harness.utils.errors import UserError

NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
MAX_NAME = 64  # its files (test_method_NAME.py, and their temporary names) must fit in 255 bytes


def new_method(name: str, methods_dir: Path, tests_dir: Path) -> tuple[Path, Path]:
    """Render the templates for ``name``; refuses to overwrite or to shadow a registered name."""
    if not NAME.match(name):
        raise UserError(
            f"method name {name!r} must be lowercase letters and digits, words joined by '-'"
        )
    if len(name) > MAX_NAME:
        raise UserError(
            f"method name {name[:20]!r}... is {len(name)} characters; at most {MAX_NAME}"
        )
    if name in METHODS:
        raise UserError(f"method {name!r} already exists")
    func_name = name.replace("-", "_")
    class_name = "".join(part.capitalize() for part in name.split("-"))
    method_path = Path(methods_dir) / f"{func_name}.py"
    test_path = Path(tests_dir) / f"test_method_{func_name}.py"
    try:
        for path in (method_path, test_path):
            if path.exists():
                raise UserError(f"{path} already exists")
        if not Path(methods_dir).is_dir():
            raise UserError(f"methods folder {methods_dir} does not exist")
        Path(tests_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a name too long for the file system, a file in the way: before writing
        raise UserError(f"cannot write {exc.filename}: {exc.strerror}") from None
    env = Environment(
        loader=PackageLoader("harness", "templates"),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    values = {"name": name, "func_name": func_name, "class_name": class_name}
    write_text_atomic(env.get_template("method.py.j2").render(values), method_path)
    write_text_atomic(env.get_template("test_method.py.j2").render(values), test_path)
    return method_path, test_path


def registration_hint(name: str, method_path: Path, builtin_dir: Path) -> list[str]:
    """How the method at ``method_path`` reaches the registry, as lines to print.

    A file in the harness's own ``methods/`` folder is imported with the package (every module
    there registers itself); anywhere else nothing imports it until a package declares it as an
    entry point of the group ``bench.methods`` (:mod:`harness.registry`) and is installed.
    """
    folder = method_path.parent.resolve()
    if folder == Path(builtin_dir).resolve():
        return [f"registered: every file in {folder} is imported with the methods package"]
    module = method_path.stem
    if (folder / "__init__.py").exists():
        module = f"{folder.name}.{module}"
    return [
        f"{method_path} is outside the harness's methods/ folder: nothing imports it yet.",
        "Register it with an entry point in the pyproject.toml of the package that holds it,",
        "",
        '    [project.entry-points."bench.methods"]',
        f'    {name} = "{module}"',
        "",
        f"then install that package (pip install -e .); `bench list methods` shows {name}.",
    ]
