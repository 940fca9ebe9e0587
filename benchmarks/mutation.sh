#!/usr/bin/env bash
# Mutation check of one core module against its fast unit tests (not in CI; see docs/testing.md).
# Usage: benchmarks/mutation.sh [module] [test file...]; default: sampling with
# tests/test_sampling.py. Runs mutmut (pip install mutmut; 3.8.1 used) in a copy of HEAD under
# a temp dir, so the worktree is untouched; only that module is mutated (only_mutate: mutmut
# 3.8 reads paths_to_mutate as an old name of source_paths, so before, every tf_frcnn module
# the tests reach was mutated and run, the module's rows picked out at the end). mutmut 3
# wraps every mutated function in a trampoline (functools.wraps over *args, **kwargs); Keras
# reads a layer's __init__ with inspect.getfullargspec, which does not follow __wrapped__
# (IndexError in keras/src/ops/operation.py), so the copy's tests/conftest.py first gives each
# __init__ trampoline the wrapped function's __signature__: test files that build Keras layers
# run too.
# REV names the commit to copy (default HEAD), e.g. the one before new tests for a "before" score.
# MUTMUT names another mutmut executable (e.g. one installed with pip install --target DIR, run
# with PYTHONPATH=DIR), default .venv/bin/mutmut.
set -euo pipefail
module=${1:-sampling}
shift || true
tests=("${@:-tests/test_sampling.py}")
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
git -C "$root" archive "${REV:-HEAD}" | tar -x -C "$work"
cd "$work"
sed -i 's/^addopts = .*/addopts = -p no:cacheprovider -rs/' setup.cfg
{
    echo
    echo "[mutmut]"
    echo "source_paths = tf_frcnn"
    echo "only_mutate = *tf_frcnn/$module.py"
    echo "also_copy = tests"
    # TF ops run before a fork leave the child's tf.function calls hanging (its thread pools
    # stay in the parent): fork each mutant's run from a server that imported TF but ran none.
    echo "process_isolation = forkserver"
    echo "forkserver_warmup = import"
    echo "preload_modules_file = $work/mutmut_preload.txt"
    echo "timeout_constant = 5"
    echo "pytest_add_cli_args_test_selection ="
    for test in "${tests[@]}"; do echo "    $test"; done
} >>setup.cfg
{
    cat <<'PY'
# Added by benchmarks/mutation.sh: mutmut's trampolines keep the signature Keras reads.
import inspect as _inspect

from mutmut.mutation import trampoline as _trampoline

_wrap_in_trampoline = _trampoline.wrap_in_trampoline


def _wrap_keeping_signature(mutants_dict, is_classmethod=False):
    decorate = _wrap_in_trampoline(mutants_dict, is_classmethod)

    def mutated(func):
        wrapper = decorate(func)
        if func.__name__ == "__init__":
            # Only there: Keras wraps a layer's build with functools.wraps of the bound
            # method, which would copy a __signature__ (self included) onto its wrapper.
            wrapper.__signature__ = _inspect.signature(func)
        return wrapper

    return mutated


_trampoline.wrap_in_trampoline = _wrap_keeping_signature
PY
    cat tests/conftest.py
} >tests/conftest.py.new
mv tests/conftest.py.new tests/conftest.py
printf 'tensorflow\nkeras\nnumpy\npytest\n' >mutmut_preload.txt
mutmut=${MUTMUT:-$root/.venv/bin/mutmut}
# MUTANTS (space-separated globs of mutant names, e.g. 'tf_frcnn.roi.x_sample_rois__mutmut_*')
# runs only those mutants of the module.
read -r -a only <<<"${MUTANTS:-}"
"$mutmut" run --max-children 2 "${only[@]}" >/dev/null || true
"$mutmut" results --all true | grep "tf_frcnn\.$module\." | grep -v ": not checked" |
    awk '{print $NF}' | sort | uniq -c
echo "(work dir: $work)"
