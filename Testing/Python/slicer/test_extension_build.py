"""The extension as Slicer's build and catalog see it: the shared resources reach the build tree where the engine
looks for them (run through CMake in script mode where cmake is installed), and the catalog entry has real URLs, a
description of the modules that exist and a licence."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

TOP_CMAKE = REPO_ROOT / "CMakeLists.txt"
RESOURCES_CMAKE = REPO_ROOT / "MMRegistration" / "MMRegistrationResources.cmake"
MODULE_TITLES = ("SINR Registration", "DISA Similarity", "RSO Refine", "Registration Evaluation")
PLACEHOLDERS = re.compile(r"example\.com|TODO|FIXME|Firstname|Lastname|placeholder|Affiliation|YOUR", re.I)


def _cmake_calls(text: str, command: str) -> list:
    """The argument texts of every ``command(...)`` call (comments removed)."""
    text = re.sub(r"#[^\n]*", "", text)
    return [m.group(1) for m in re.finditer(rf"\b{command}\(([^()]*(?:\$\{{[^}}]*\}}[^()]*)*)\)", text, re.S)]


def _extension_variables() -> dict:
    text = TOP_CMAKE.read_text(encoding="utf-8")
    return dict(re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\)', text))


def test_resources_are_copied_into_the_build_tree_beside_the_engine():
    """The resources go to ``${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/Resources``, beside the folder the
    engine is compiled into (MMRegistration/CMakeLists.txt), which is where resources_dir() looks; every folder the
    engine reads is included."""
    from MMRegistrationLib import resources

    call = _cmake_calls(TOP_CMAKE.read_text(encoding="utf-8"), "mmreg_add_resources")
    assert len(call) == 1, call
    words = call[0].split()
    build_dir = words[words.index("BUILD_DIR") + 1]
    directories = words[words.index("DIRECTORIES") + 1:words.index("BUILD_DIR")]
    assert {"SampleCase", "DISA", "Networks", "Segmentation"} <= set(directories)
    engine = next(c for c in _cmake_calls((REPO_ROOT / "MMRegistration" / "CMakeLists.txt").read_text(encoding="utf-8"),
                                          "ctkMacroCompilePythonScript") if "TARGET_NAME MMRegistrationLib" in c)
    engine_dir = re.search(r"DESTINATION_DIR\s+(\S+)", engine).group(1)
    assert build_dir == f"{engine_dir}/Resources"
    assert resources.resources_dir() == Path(resources.__file__).resolve().parent.parent / "Resources"


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_build_tree_copy_is_found_by_the_engine(tmp_path):
    """mmreg_add_resources (CMake script mode) into a fake build tree holding a copy of the engine: the copied engine
    finds the sample case and the DISA weights there; hidden files (e.g. a partial output) are left out."""
    source = tmp_path / "Resources"
    for directory in ("SampleCase", "DISA", "Networks", "Segmentation"):
        shutil.copytree(REPO_ROOT / "Resources" / directory, source / directory)
    (source / "Networks" / ".partial-1").mkdir()
    (source / "Networks" / ".partial-1" / "net.pt").write_bytes(b"unfinished")
    (source / "DISA" / ".DS_Store").write_bytes(b"")
    lib_dir = tmp_path / "build" / "lib" / "Slicer-5.8" / "qt-scripted-modules"
    script = tmp_path / "copy.cmake"
    script.write_text(
        f'include("{RESOURCES_CMAKE.as_posix()}")\n'
        f'mmreg_add_resources(SOURCE_DIR "{source.as_posix()}" '
        f'DIRECTORIES SampleCase DISA Networks Segmentation BUILD_DIR "{(lib_dir / "Resources").as_posix()}")\n',
        encoding="utf-8")
    done = subprocess.run(["cmake", "-P", str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    copied = {p.relative_to(lib_dir / "Resources") for p in (lib_dir / "Resources").rglob("*") if p.is_file()}
    expected = {p.relative_to(source) for p in source.rglob("*") if p.is_file() and ".partial-1" not in str(p)
                and p.name != ".DS_Store"}
    assert copied == expected
    shutil.copytree(REPO_ROOT / "MMRegistrationLib", lib_dir / "MMRegistrationLib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import MMRegistrationLib.resources as r; p = r.sample_case_paths(); "
            "print(r.resources_dir()); print((r.resources_dir() / 'DISA' / 'disa_lc2.pt').is_file())")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                           cwd=tmp_path, env={"PYTHONPATH": str(lib_dir), "PATH": "/usr/bin:/bin"})
    assert found.returncode == 0, found.stderr[-3000:]
    assert found.stdout.split() == [str((lib_dir / "Resources").resolve()), "True"]


def test_install_tree_gets_the_same_resources():
    text = RESOURCES_CMAKE.read_text(encoding="utf-8")
    assert "install(" in text and 'PATTERN ".*" EXCLUDE' in text
    call = _cmake_calls(TOP_CMAKE.read_text(encoding="utf-8"), "mmreg_add_resources")[0]
    assert "INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/Resources" in " ".join(call.split())


def test_catalog_entry_has_no_placeholders_and_points_at_files_that_exist():
    variables = _extension_variables()
    for name in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                 "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert variables.get(name, "").strip(), f"{name} is empty"
        assert not PLACEHOLDERS.search(variables[name]), (name, variables[name])
    homepage = variables["EXTENSION_HOMEPAGE"]
    assert homepage.startswith("https://github.com/")
    repository = homepage.split("#")[0].removeprefix("https://github.com/")
    for url in [variables["EXTENSION_ICONURL"], *variables["EXTENSION_SCREENSHOTURLS"].split()]:
        prefix = f"https://raw.githubusercontent.com/{repository}/main/"
        assert url.startswith(prefix), url
        assert (REPO_ROOT / url.removeprefix(prefix)).is_file(), f"{url}: no such file in the repository"
    assert (REPO_ROOT / "Resources" / "Icons" / "MMRegistration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_description_names_the_modules_that_exist():
    description = _extension_variables()["EXTENSION_DESCRIPTION"]
    titles = set()
    for path in (REPO_ROOT / "MMRegistration").glob("*/*.py"):
        match = re.search(r'self\.parent\.title = "([^"]+)"', path.read_text(encoding="utf-8"))
        if match:
            titles.add(match.group(1))
    assert titles == set(MODULE_TITLES)
    assert all(title in description for title in titles), description
    assert f"{len(titles)} modules" in description or "Four modules" in description


def test_licence_file_and_readme():
    licence = (REPO_ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert "Copyright 2026 MMRegistration contributors" in licence and "[yyyy]" not in licence
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(r"^## Licen[cs]e\n\nApache License 2\.0 \(`LICENSE`\)", readme, re.M)
    assert "Apache-2.0" in (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
