#!/usr/bin/env python3
"""Writes tests/fixtures/chat/expected.json: each chat template rendered over each conversation
in tests/fixtures/chat/conversations.json by Python jinja2, configured as transformers'
apply_chat_template configures it. Dev-only (needs ../shared, the default GGUF, pip jinja2 and
gguf); tests/unit/chat_template_golden_test.cc compares the C++ interpreter against the result.

Usage: python3 scripts/dev/make_chat_template_expectations.py
       python3 scripts/dev/make_chat_template_expectations.py --unit-cases
The second form prints, as JSON, the small construct-by-construct templates of
tests/unit/chat_template_test.cc with jinja2's output for each (pasted there as expectations).
"""
import sys
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


def unit_cases():
    M = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]}
    cases = [
     ("text", "plain text", {}),
     ("print_concat", "{{ 'a' ~ 1 ~ none }}|{{ 'x' + 'y' }}", {}),
     ("comment", "a{# hidden #}b", {}),
     ("dash_strips_all_whitespace", "a  \n {%- if true -%} \n x \n {%- endif -%}  \n b", {}),
     ("dash_on_print", "a \n {{- 'x' -}} \n b", {}),
     ("trim_blocks", "{% if true %}\nx\n{% endif %}\ny\n", {}),
     ("lstrip_blocks", "  {% if true %}\n  x\n  {% endif %}\nend", {}),
     ("lstrip_not_after_text_on_line", "a  {% if true %}b{% endif %}", {}),
     ("plus_disables_lstrip", "  {%+ if true %}x{% endif %}", {}),
     ("plus_disables_trim", "{% if true +%}\nx{% endif %}", {}),
     ("comment_trim_and_lstrip", "  {# c #}\nx", {}),
     ("print_keeps_newline", "{{ 'a' }}\nb", {}),
     ("if_elif_else", "{% for n in [1, 2, 3] %}{% if n == 1 %}one{% elif n == 2 %}two{% else %}many{% endif %},{% endfor %}", {}),
     ("for_loop_vars", "{% for m in messages %}{{ loop.index0 }}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }} {% endfor %}", M),
     ("for_filter_and_else", "{% for m in messages if m.role == 'user' %}{{ m.content }}{{ loop.length }}{% endfor %}|{% for x in [] %}x{% else %}empty{% endfor %}", M),
     ("for_break_continue", "{% for i in range(10) %}{% if i == 1 %}{% continue %}{% endif %}{% if i > 3 %}{% break %}{% endif %}{{ i }}{% endfor %}", {}),
     ("for_unpack_items", "{% for k, v in {'a': 1, 'b': [2]}.items() %}{{ k }}={{ v }};{% endfor %}{% for k, v in {'z': 0} | items %}{{ k }}{{ v }}{% endfor %}", {}),
     ("for_over_string_and_dict", "{% for c in 'héllo' %}[{{ c }}]{% endfor %}{% for k in {'x': 1, 'y': 2} %}{{ k }}{% endfor %}", {}),
     ("set_scope_in_loop", "{% set x = 'outer' %}{% for i in [1] %}{% set x = 'inner' %}{{ x }}{% endfor %}{{ x }}", {}),
     ("namespace", "{% set ns = namespace(count=0, found=false) %}{% for m in messages %}{% set ns.count = ns.count + 1 %}{% if m.role == 'assistant' %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.count }} {{ ns.found }}", M),
     ("set_block_and_tuple", "{% set a, b = 1, 2 %}{% set body %}[{{ a + b }}]{% endset %}{{ body }}{{ body | length }}", {}),
     ("macro", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', '?') }} {{ greet(name='Cy', punct='.') }}", {}),
     ("literals", "{{ [1, 'two', 3.5, none, true] }} {{ {'k': 'v', 'n': [1, {'m': false}]} }}", {}),
     ("tojson", "{{ {'b': 1, 'a': [true, none, 1.5, 'é\"\\n']} | tojson }} {{ [1, 2] | tojson(indent=2) }} {{ 'x' | tojson }}", {}),
     ("attribute_and_subscript", "{{ messages[1]['content'] }}{{ messages[1].content }}{{ messages[-1].role }}{{ messages[0]['missing'] is defined }}", M),
     ("slices", "{{ [1, 2, 3, 4][::-1] }}{{ [1, 2, 3, 4][1:] }}{{ [1, 2, 3, 4][:-1] }}{{ [1, 2, 3, 4][::2] }}{{ 'héllo'[1:3] }}{{ 'abc'[::-1] }}{{ 'abc'[-1] }}", {}),
     ("arithmetic", "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 7 / 2 }} {{ 1 + 2.5 }} {{ 'ab' * 3 }} {{ 4 / 2 }} {{ -(3) }} {{ 1 - 2 * 3 }} {{ (1 - 2) * 3 }}", {}),
     ("float_repr", "{{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1.5e-7 }} {{ 100.0 }} {{ 1/3 }} {{ 123456789012345678.0 }}", {}),
     ("comparisons_and_logic", "{{ 1 < 2 }} {{ 'a' >= 'b' }} {{ 1 == 1.0 }} {{ 'x' != 'y' }} {{ 0 or 'fallback' }} {{ 'a' and 'b' }} {{ not [] }} {{ 'b' in 'abc' }} {{ 2 not in [1, 2] }} {{ 'k' in {'k': 1} }}", {}),
     ("tests", "{{ x is defined }}{{ y is undefined }}{{ none is none }}{{ 'a' is string }}{{ {} is mapping }}{{ [] is iterable }}{{ 3 is number }}{{ 9 is divisibleby(3) }}{{ 3 is odd }}{{ 4 is even }}{{ x is not none }}{{ true is true }}{{ 1 is true }}{{ 1 is integer }}{{ 1.0 is float }}{{ 2 is eq 2 }}", {"x": 1}),
     ("ternary", "{{ 'yes' if x else 'no' }}[{{ 'only' if not x }}]{{ 'a' if false else 'b' if true else 'c' }}", {"x": 1}),
     ("string_filters", "[{{ '  pad \n' | trim }}][{{ 'abc' | upper }}][{{ 'ABC' | lower }}][{{ 'hello WORLD' | capitalize }}][{{ 'a-b-a' | replace('a', 'x') }}][{{ 'a-b-a' | replace('a', 'x', 1) }}][{{ 'héllo' | length }}][{{ 'two words' | title }}]", {}),
     ("list_filters", "{{ [3, 1, 2] | first }}{{ [3, 1, 2] | last }}{{ [1, 2] | join(', ') }}{{ 'ab' | list }}{{ [1, 2] | length }}{{ [1, 2] | reverse | list }}{{ messages | map(attribute='role') | join(',') }}{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | list }}{{ messages | rejectattr('role', 'in', ['user', 'system']) | list | length }}", M),
     ("default_and_misc_filters", "{{ missing | default('dflt') }}{{ '' | default('empty', true) }}{{ '' | default('kept') }}{{ 3.14159 | round(2) }}{{ 2.5 | round }}{{ 42 | string ~ '!' }}{{ '7' | int + 1 }}{{ -3 | abs }}{{ '2.5' | float }}{{ [1, 2] | string }}", {}),
     ("string_methods", "{{ 'a,b,,c'.split(',') }}{{ ' x y  '.split() }}{{ 'xxhixx'.strip('x') }}{{ '<a>b'.startswith(('<a>', 'z')) }}{{ 'file.txt'.endswith('.txt') }}{{ '\n\nq\n'.lstrip('\n') }}|{{ 'q\n\n'.rstrip() }}|{{ 'A b'.upper() }}{{ 'A b'.lower() }}", {}),
     ("undefined_prints_empty", "[{{ nothing }}][{{ messages[99] }}][{{ {'a': 1}.b }}]{{ nothing | length }}{% for x in nothing %}x{% endfor %}", M),
     ("print_values", "{{ none }} {{ true }} {{ false }} {{ 'it''s' }} {{ ['it\\'s', \"q\\\"\"] }} {{ {'a': none} }}", {}),
     ("dict_methods", "{{ {'a': 1}.get('a') }}{{ {'a': 1}.get('b', 'z') }}{{ {'a': 1}.get('b') }}{{ {'a': 1, 'b': 2}.keys() | list }}{{ {'a': 1, 'b': 2}.values() | list }}", {}),
     ("unicode_passthrough", "{{ s }}|{{ s | length }}|{{ s[0] }}|{{ s | tojson }}", {"s": "🙂 naïve 世界"}),
     ("add_generation_prompt_like_hf", "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}", {**M, "add_generation_prompt": True}),
    ]
    env = environment()
    return [{"name": n, "template": t, "context": c, "expected": env.from_string(t).render(**c)}
            for n, t, c in cases]


def main():
    if "--unit-cases" in sys.argv[1:]:
        print(json.dumps(unit_cases(), ensure_ascii=False, indent=1))
        return
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
