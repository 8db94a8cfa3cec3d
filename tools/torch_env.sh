#!/usr/bin/env bash
# Kept at the path our setup notes have always given: creates .venv-torch/ (the PyTorch +
# transformers comparison env) by running tools/env/torch_env.sh. Arguments pass through.
exec bash "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env/torch_env.sh" "$@"
