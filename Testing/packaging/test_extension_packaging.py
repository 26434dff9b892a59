"""The Slicer extension's packaging.

Runs real CMake on the extension against Testing/SlicerStandIn, a stand-in Slicer whose macros
place files as Slicer's and CTK's do and record what they receive, builds it (file copies only)
and installs it into a temporary prefix. The extension must install every git-tracked file of
MedLSDM/ (MedLSDM.py and its package; not CMakeLists.txt) with its path in that folder, and every
git-tracked file of MedLSDMLib/ and Resources/ with its path in the repository, all under
<qt-scripted-modules>/ and nothing elsewhere. It must list no file that does not exist, ask for
Slicer's generic module tests and the module's unittest, and describe itself the same way in
CMakeLists.txt, MedLSDM.s4ext and MedLSDM.json (the ExtensionsIndex entry). Each check is also run
on a copy of the tree broken on purpose.
"""
from __future__ import annotations

import filecmp
import json
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
STAND_IN = REPO / "Testing" / "SlicerStandIn"
SCRIPTED_MODULES = "lib/Slicer-5.8/qt-scripted-modules"  # the stand-in's Slicer_QTSCRIPTEDMODULES_LIB_DIR
MODULE = "MedLSDM"
PACKAGED = ("MedLSDMLib", "Resources")  # top-level folders installed beside MedLSDM.py
TOP_FILES = ("CMakeLists.txt", "README.md", "LICENSE", f"{MODULE}.s4ext", f"{MODULE}.json")

# The newest catalog entry schema in Slicer's Schemas/ folder, and the keys it allows.
CATALOG_SCHEMA = ("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
                  "slicer-extension-catalog-entry-schema-v1.0.2.json#")
CATALOG_KEYS = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
                "dicom_support_rule", "build_subdirectory", "enabled", "tier"}
# s4ext keyword -> EXTENSION_<name> of CMakeLists.txt
S4EXT_VARIABLES = {"homepage": "HOMEPAGE", "contributors": "CONTRIBUTORS", "category": "CATEGORY",
                   "iconurl": "ICONURL", "status": "STATUS", "description": "DESCRIPTION",
                   "screenshoturls": "SCREENSHOTURLS", "depends": "DEPENDS", "enabled": "ENABLED",
                   "build_subdirectory": "BUILD_SUBDIRECTORY", "tier": "TIER"}
# How the ExtensionsIndex's check script reads the icon and screenshot URLs from CMakeLists.txt.
INDEX_PATTERNS = {"ICONURL": r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)',
                  "SCREENSHOTURLS": r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)'}


# ---------------------------------------------------------------------------------------------
# Running CMake
# ---------------------------------------------------------------------------------------------

def cmake_executable() -> Optional[str]:
    """CMake from the PyPI package (the `test` extra), else the one on PATH."""
    try:
        import cmake
        found = shutil.which("cmake", path=cmake.CMAKE_BIN_DIR)
        if found:
            return found
    except ImportError:
        pass
    return shutil.which("cmake")


@dataclass
class Build:
    source: Path
    build: Path
    prefix: Path
    ok: bool
    log: str
    records: List[List[str]]



def run_cmake(source: Path, work: Path, install: bool = True) -> Build:
    """Configure the extension in source against the stand-in; then build and install it."""
    cmake = cmake_executable()
    if cmake is None:
        pytest.skip("no cmake: pip install -e .[test] installs it")
    build, prefix = work / "build", work / "prefix"
    steps = [[cmake, "-S", str(source), "-B", str(build), f"-DSlicer_DIR={STAND_IN}", "-DBUILD_TESTING=ON"]]
    if install:
        steps += [[cmake, "--build", str(build)], [cmake, "--install", str(build), "--prefix", str(prefix)]]
    log, ok = "", True
    for step in steps:
        result = subprocess.run(step, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
        log += result.stdout
        if result.returncode != 0:
            if re.search(r"No CMAKE_(C|CXX)_COMPILER could be found", log):
                pytest.skip("project() needs a C/C++ compiler, and none is installed")
            ok = False
            break
    record_file = build / "slicer-stand-in" / "calls.tsv"
    lines = record_file.read_text().splitlines() if record_file.exists() else []
    return Build(source, build, prefix, ok, log, [line.split("\t") for line in lines])


def flat(text: str) -> str:
    """CMake wraps long messages: compare with whitespace collapsed."""
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------

def source_files(root: Path, folder: str) -> List[str]:
    """Files of root/folder (paths relative to root) that belong to the source: the git-tracked ones
    in a git checkout, else every file but Python caches."""
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, universal_newlines=True, check=True).stdout.strip()
        if Path(top).resolve() == root.resolve():
            listed = subprocess.run(["git", "ls-files", "-z", "--", folder], cwd=root, stdout=subprocess.PIPE,
                                    universal_newlines=True, check=True).stdout
            return sorted(p for p in listed.split("\0") if p and (root / p).is_file())
    except (OSError, subprocess.CalledProcessError):
        pass  # not a git checkout
    return sorted(p.relative_to(root).as_posix() for p in (root / folder).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def expected_files(source: Path) -> Dict[str, Path]:
    """Installed path (relative to qt-scripted-modules) -> the source file it must be a copy of:
    the files of MedLSDM/ (MedLSDM.py and its package) but CMakeLists.txt, by their path in that
    folder, and the files of MedLSDMLib/ and Resources/ by their path in the repository."""
    expected = {rel[len(MODULE) + 1:]: source / rel for rel in source_files(source, MODULE)
                if Path(rel).name != "CMakeLists.txt"}
    expected[f"{MODULE}.py"] = source / MODULE / f"{MODULE}.py"  # even before git tracks it
    for folder in PACKAGED:
        expected.update({rel: source / rel for rel in source_files(source, folder)})
    return expected


def installation_problems(result: Build) -> List[str]:
    """What a Slicer install of this build would lack, or hold that it should not."""
    if not result.ok:
        return [f"the extension does not build and install:\n{result.log}"]
    problems = []
    build_modules = (result.build / SCRIPTED_MODULES).resolve()
    for _, target, _, source, destination in (r for r in result.records if r[0] == "copy"):
        if not Path(source).is_file():
            problems.append(f"{target} lists {source}, which does not exist")
        if build_modules not in Path(destination).resolve().parents:
            problems.append(f"{target} copies {source} to {destination}, outside {build_modules}, "
                            "the folder that Slicer installs")
    installed = {p.relative_to(result.prefix).as_posix() for p in result.prefix.rglob("*") if p.is_file()}
    expected = expected_files(result.source)
    for rel, source in expected.items():
        where = f"{SCRIPTED_MODULES}/{rel}"
        if where not in installed:
            problems.append(f"{rel} is not installed (as {where}): list it in MedLSDM/CMakeLists.txt")
        elif not filecmp.cmp(source, result.prefix / where, shallow=False):
            problems.append(f"{where} is not a copy of {source}")
    for where in sorted(installed):
        rel = where[len(SCRIPTED_MODULES) + 1:] if where.startswith(SCRIPTED_MODULES + "/") else None
        if rel is None:
            problems.append(f"{where} is installed outside {SCRIPTED_MODULES}")
        elif rel not in expected:
            problems.append(f"{where} is installed but is not a source file of the extension (not tracked by git?)")
    return problems


def module_test_problems(result: Build) -> List[str]:
    """Slicer's generic tests and the module's unittest must be asked for."""
    problems = []
    kinds = {r[0]: r[1:] for r in result.records}
    if kinds.get("scripted_module", [None])[0] != MODULE:
        problems.append(f"no scripted module {MODULE} is built")
    if kinds.get("generic_tests") != [MODULE]:
        problems.append("Slicer's generic module tests are not requested (WITH_GENERIC_TESTS)")
    unittest = kinds.get("python_unittest")
    script = result.source / MODULE / f"{MODULE}.py"
    if unittest is None or Path(unittest[1]).name != script.name \
            or Path(unittest[1]).parent.resolve() != script.parent.resolve():
        problems.append(f"no slicer_add_python_unittest for {script} (got {unittest})")
    for kind in ("generate_config", "cpack"):
        if kind not in kinds:
            problems.append(f"CMakeLists.txt does not include Slicer's {kind} step")
    return problems


def parse_s4ext(text: str) -> Dict[str, str]:
    """An s4ext file: the first token of each non-comment line is the key, the rest the value."""
    entries = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            entries[key] = value.strip()
    return entries


def metadata_problems(source: Path, extension: Dict[str, str]) -> List[str]:
    """CMakeLists.txt (as Slicer received it), MedLSDM.s4ext and MedLSDM.json must agree, and follow
    what the ExtensionsIndex checks."""
    problems = []
    s4ext = parse_s4ext((source / f"{MODULE}.s4ext").read_text())
    catalog = json.loads((source / f"{MODULE}.json").read_text())

    for key, name in S4EXT_VARIABLES.items():
        if s4ext.get(key) != extension.get(name):
            problems.append(f"{MODULE}.s4ext {key} {s4ext.get(key)!r} differs from EXTENSION_{name} "
                            f"{extension.get(name)!r} of CMakeLists.txt")
    if s4ext.get("scm") != "git":
        problems.append(f"{MODULE}.s4ext scm must be git, not {s4ext.get('scm')!r}")

    if catalog.get("$schema") != CATALOG_SCHEMA:
        problems.append(f"{MODULE}.json $schema must be {CATALOG_SCHEMA}")
    for key in sorted(set(catalog) - CATALOG_KEYS):
        problems.append(f"{MODULE}.json has {key!r}, which the catalog schema does not allow")
    depends = [d for d in extension.get("DEPENDS", "").split() if d != "NA"]
    agree = {  # catalog key: (its value with the schema's default, the value it must equal)
        "category": (catalog.get("category"), extension.get("CATEGORY")),
        "build_dependencies": (catalog.get("build_dependencies", []), depends),
        "build_subdirectory": (catalog.get("build_subdirectory", "."), extension.get("BUILD_SUBDIRECTORY")),
        "enabled": (catalog.get("enabled", True), extension.get("ENABLED") == "1"),
        "tier": (str(catalog.get("tier", 1)), extension.get("TIER")),
        "scm_type": (catalog.get("scm_type", "git"), s4ext.get("scm")),
        "scm_url": (catalog.get("scm_url"), s4ext.get("scmurl")),
        "scm_revision": (catalog.get("scm_revision"), s4ext.get("scmrevision")),
    }
    for key, (value, wanted) in agree.items():
        if value != wanted:
            problems.append(f"{MODULE}.json {key} {value!r} differs from {wanted!r}")

    # What the ExtensionsIndex's checks ask of an entry.
    if extension.get("NAME") != MODULE or MODULE.lower().startswith("slicer"):
        problems.append(f"the extension (project) must be named {MODULE}, like its catalog file")
    url = str(catalog.get("scm_url", ""))
    repository = url.rstrip("/").split("/")[-1]
    repository = repository[:-4] if repository.endswith(".git") else repository
    if not url.startswith("https://") or not repository.startswith("Slicer"):
        problems.append(f"scm_url {url!r} must be an https URL of a repository named Slicer...")
    cmake_text = (source / "CMakeLists.txt").read_text()
    for name, pattern in INDEX_PATTERNS.items():
        found = re.search(pattern, cmake_text)
        if not found or found.group(1) != extension.get(name):
            problems.append(f"the ExtensionsIndex cannot read EXTENSION_{name} from CMakeLists.txt: "
                            f'write it as set(EXTENSION_{name} "<url>") on one line')
    # The icon URL is the raw GitHub address of the icon in this repository.
    repository_path = extension.get("HOMEPAGE", "").replace("https://github.com/", "")
    icon = re.fullmatch(rf"https://raw\.githubusercontent\.com/{re.escape(repository_path)}/[^/]+/(.+)",
                        extension.get("ICONURL", ""))
    if not icon or icon.group(1) not in source_files(source, "Resources"):
        problems.append(f"EXTENSION_ICONURL {extension.get('ICONURL')!r} does not name a file of Resources/ "
                        f"in {extension.get('HOMEPAGE')}")
    return problems


# ---------------------------------------------------------------------------------------------
# The extension as it is
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def repo_build(tmp_path_factory) -> Build:
    return run_cmake(REPO, tmp_path_factory.mktemp("extension"))


@pytest.fixture(scope="module")
def extension(repo_build) -> Dict[str, str]:
    """The EXTENSION_* values that Slicer's CPack step received from CMakeLists.txt."""
    assert repo_build.ok, repo_build.log
    return {r[1]: r[2] for r in repo_build.records if r[0] == "extension"}


@pytest.mark.slow
def test_every_file_is_installed_beside_the_module(repo_build):
    expected = expected_files(REPO)
    assert "MedLSDMLib/__init__.py" in expected and "Resources/Models.json" in expected  # not vacuous
    problems = installation_problems(repo_build)
    assert not problems, "\n".join(problems)


def test_module_tests_are_requested(repo_build):
    assert repo_build.ok, repo_build.log
    problems = module_test_problems(repo_build)
    assert not problems, "\n".join(problems)


def test_descriptions_agree_with_cmake(extension):
    problems = metadata_problems(REPO, extension)
    assert not problems, "\n".join(problems)


def test_icon_is_a_128_pixel_png():
    data = (REPO / "Resources" / "Icons" / f"{MODULE}.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (128, 128)


# ---------------------------------------------------------------------------------------------
# The checks catch a broken tree
# ---------------------------------------------------------------------------------------------

def copy_extension(destination: Path) -> Path:
    """The extension's source files (what a fresh clone holds) as links in destination."""
    files = list(TOP_FILES) + source_files(REPO, MODULE) + [f for folder in PACKAGED for f in source_files(REPO, folder)]
    for rel in files:
        target = destination / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.symlink_to(REPO / rel)
        except OSError:  # no symbolic links (Windows without the privilege)
            shutil.copy2(REPO / rel, target)
    return destination


def rewrite(path: Path, text: str) -> None:
    """Replace a file of a copy_extension tree: never write through the link into the repository."""
    path.unlink()
    path.write_text(text)


def edited(path: Path, old: str, new: str) -> str:
    text = path.read_text()
    assert old in text, f"{path} no longer holds {old!r}: update this test"
    return text.replace(old, new)


@pytest.mark.parametrize("missing", ["MedLSDM/MedLSDM.py", "MedLSDMLib/io/labels.py", "Resources/Models.json"])
def test_a_listed_file_that_does_not_exist_stops_the_configure(tmp_path, missing):
    source = copy_extension(tmp_path / "source")
    (source / missing).unlink()
    log = flat(run_cmake(source, tmp_path, install=False).log)
    assert Path(missing).name in log and ("nonexistent file" in log or "does not exist" in log), log


@pytest.mark.slow
def test_an_unlisted_file_is_reported(tmp_path):
    source = copy_extension(tmp_path / "source")
    (source / "Resources" / "Examples" / "unlisted.txt").write_text("not in MedLSDM/CMakeLists.txt\n")
    problems = installation_problems(run_cmake(source, tmp_path))
    assert any(p.startswith("Resources/Examples/unlisted.txt is not installed") for p in problems), problems


def test_files_given_to_the_module_macro_as_dot_dot_paths_are_not_installed(tmp_path):
    """Why MedLSDM/CMakeLists.txt calls the CTK macro: through Slicer's module macro, "../" paths
    are copied beside qt-scripted-modules, outside the folder that gets installed."""
    source = copy_extension(tmp_path / "source")
    engine = source_files(REPO, "MedLSDMLib")
    rewrite(source / MODULE / "CMakeLists.txt", "\n".join([
        "slicerMacroBuildScriptedModule(NAME MedLSDM SCRIPTS MedLSDM.py",
        *(f"  ../{f}" for f in engine),
        "  RESOURCES", *(f"  ../{f}" for f in source_files(REPO, "Resources")),
        "  WITH_GENERIC_TESTS)",
        "slicer_add_python_unittest(SCRIPT MedLSDM.py)", ""]))
    result = run_cmake(source, tmp_path)
    problems = installation_problems(result)
    assert f"{engine[0]} is not installed (as {SCRIPTED_MODULES}/{engine[0]}): list it in MedLSDM/CMakeLists.txt" \
        in problems
    assert any("outside" in p and p.startswith("MedLSDM copies") for p in problems), problems
    assert module_test_problems(result) == []


def test_missing_module_tests_are_reported(tmp_path):
    source = copy_extension(tmp_path / "source")
    module_cmake = source / MODULE / "CMakeLists.txt"
    rewrite(module_cmake, edited(module_cmake, "  WITH_GENERIC_TESTS\n", ""))
    rewrite(module_cmake, edited(module_cmake, "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)", ""))
    problems = module_test_problems(run_cmake(source, tmp_path, install=False))
    assert len(problems) == 2 and "WITH_GENERIC_TESTS" in problems[0] and "unittest" in problems[1], problems


@pytest.mark.parametrize("file, old, new, expected", [
    (f"{MODULE}.s4ext", "category Image Synthesis", "category Segmentation", "s4ext category"),
    (f"{MODULE}.s4ext", "depends PyTorch", "depends NA", "s4ext depends"),
    (f"{MODULE}.json", '"PyTorch"', '"NNUNet"', "json build_dependencies"),
    (f"{MODULE}.json", "schema-v1.0.2", "schema-v1.0.0", "json $schema"),
    (f"{MODULE}.json", '"tier": 1', '"tier": 1, "homepage": "x"', "'homepage'"),
    ("CMakeLists.txt", 'docs/demo_comparison.png")', 'docs/demo_comparison.png" )', "EXTENSION_SCREENSHOTURLS"),
])
def test_disagreeing_descriptions_are_reported(tmp_path, extension, file, old, new, expected):
    source = copy_extension(tmp_path)
    assert metadata_problems(source, extension) == []  # the copy as it is passes
    rewrite(source / file, edited(source / file, old, new))
    problems = metadata_problems(source, extension)
    assert any(expected in p for p in problems), problems


def test_a_cmake_variable_that_differs_from_the_descriptions_is_reported(extension):
    changed = dict(extension, DESCRIPTION="something else", ICONURL="https://example.com/x.png")
    problems = metadata_problems(REPO, changed)
    assert any("EXTENSION_DESCRIPTION" in p for p in problems) and any("EXTENSION_ICONURL" in p for p in problems)
