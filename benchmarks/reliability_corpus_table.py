"""Print the bad-input corpus of tests/reliability/test_corpus.py as a Markdown table (for
docs/bad-input.md).

    python benchmarks/reliability_corpus_table.py
"""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_corpus():
    spec = importlib.util.spec_from_file_location(
        "test_corpus", os.path.join(ROOT, "tests", "reliability", "test_corpus.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CORPUS


def cell(text):
    return str(text).replace("|", "\\|")


def main():
    print("| Kind | Where | Input | Documented outcome | Tested by |")
    print("|---|---|---|---|---|")
    for case in load_corpus():
        if isinstance(case.check, str):
            tested = f"`{case.check}`"
        else:
            tested = f"`tests/reliability/test_corpus.py::{case.check.__name__}`"
        if case.gap:
            tested += " (**open**: xfail until fixed)"
        print(
            f"| {cell(case.kind)} | {case.surface} | {cell(case.input)} | "
            f"{cell(case.outcome)} | {tested} |"
        )


if __name__ == "__main__":
    main()
