#!/usr/bin/env bash
# Mutation check of one core module against its fast unit tests (not in CI; see docs/testing.md).
# Usage: benchmarks/mutation.sh [module] [test file...]; default: sampling with
# tests/test_sampling.py. Runs mutmut (pip install mutmut; 3.8.1 used) in a copy of HEAD under
# a temp dir, so the worktree is untouched. mutmut 3's trampolines break Keras layers'
# argspec (keras/src/ops/operation.py), so only test files that build no Keras layer work.
# MUTMUT names another mutmut executable (e.g. one installed with pip install --target DIR, run
# with PYTHONPATH=DIR), default .venv/bin/mutmut.
set -euo pipefail
module=${1:-sampling}
shift || true
tests=("${@:-tests/test_sampling.py}")
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
git -C "$root" archive HEAD | tar -x -C "$work"
cd "$work"
sed -i 's/^addopts = .*/addopts = -p no:cacheprovider -rs/' setup.cfg
{
    echo
    echo "[mutmut]"
    echo "paths_to_mutate = tf_frcnn/$module.py"
    echo "source_paths = tf_frcnn"
    echo "also_copy = tests"
    echo "pytest_add_cli_args_test_selection ="
    for test in "${tests[@]}"; do echo "    $test"; done
} >>setup.cfg
mutmut=${MUTMUT:-$root/.venv/bin/mutmut}
"$mutmut" run --max-children 2 >/dev/null || true
"$mutmut" results --all true | grep "tf_frcnn\.$module\." | awk '{print $NF}' | sort | uniq -c
echo "(work dir: $work)"
