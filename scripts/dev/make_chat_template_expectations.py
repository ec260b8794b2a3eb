#!/usr/bin/env python3
"""Writes tests/fixtures/chat/expected.json: each chat template rendered over each conversation
in tests/fixtures/chat/conversations.json by Python jinja2, configured as transformers'
apply_chat_template configures it. Dev-only (needs ../shared, the default GGUF, pip jinja2 and
gguf); tests/unit/chat_template_golden_test.cc compares the C++ interpreter against the result.

Usage: python3 scripts/dev/make_chat_template_expectations.py
"""
import json
import os
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(ROOT, "..", "shared", "tokenizers")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "chat")
GGUF = os.path.expanduser("~/.cache/kvfold/SmolLM2-135M-Instruct.Q4_1.gguf")


def tokenizer_config(name):
    with open(os.path.join(SHARED, name, "tokenizer_config.json")) as f:
        return json.load(f)


def token_text(tok):
    return tok["content"] if isinstance(tok, dict) else tok


def templates():
    """name -> (source, bos_token, eos_token); see the C++ test for where each comes from."""
    out = {}
    for name in ("llama3", "qwen3"):
        c = tokenizer_config(name)
        out[name] = (c["chat_template"], token_text(c.get("bos_token")), token_text(c.get("eos_token")))
    for name in ("llama2", "mistral"):  # their shared configs have no chat_template
        c = tokenizer_config(name)
        with open(os.path.join(FIXTURES, "templates", name + ".jinja")) as f:
            out[name] = (f.read(), token_text(c.get("bos_token")), token_text(c.get("eos_token")))
    import gguf

    reader = gguf.GGUFReader(GGUF)
    field = reader.fields["tokenizer.chat_template"]
    source = bytes(field.parts[field.data[0]]).decode("utf-8")
    tokens = reader.fields["tokenizer.ggml.tokens"]

    def token(key):
        f = reader.fields[key]
        idx = int(f.parts[f.data[0]][0])
        return bytes(tokens.parts[tokens.data[idx]]).decode("utf-8")

    out["smollm2"] = (source, token("tokenizer.ggml.bos_token_id"), token("tokenizer.ggml.eos_token_id"))
    return out


def environment():
    # As transformers.utils.chat_template_utils._compile_jinja_template does it.
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    with open(os.path.join(FIXTURES, "conversations.json")) as f:
        conversations = json.load(f)["conversations"]
    env = environment()
    result = {}
    for name, (source, bos, eos) in sorted(templates().items()):
        template = env.from_string(source)
        cases = {}
        for conv in conversations:
            context = {"tools": None, "documents": None, "bos_token": bos, "eos_token": eos}
            context.update({k: v for k, v in conv.items() if k != "name"})
            try:
                cases[conv["name"]] = {"output": template.render(**context)}
            except jinja2.exceptions.TemplateError as e:
                # raise_exception's message is what the C++ side must report too; other errors
                # (type errors, undefined names) only need to be errors there.
                kind = "raise_exception" if type(e) is jinja2.exceptions.TemplateError else "error"
                cases[conv["name"]] = {kind: str(e)}
            except Exception as e:  # TypeError and the like from Python operators
                cases[conv["name"]] = {"error": f"{type(e).__name__}: {e}"}
        result[name] = {"bos_token": bos, "eos_token": eos, "cases": cases}
    with open(os.path.join(FIXTURES, "expected.json"), "w") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
