// The Jinja interpreter construct by construct. Each case's expected output was produced by
// Python jinja2 3.1 configured as transformers does it (ImmutableSandboxedEnvironment,
// trim_blocks, lstrip_blocks, loopcontrols, transformers' tojson); errors and malformed input
// must come back as statuses with line numbers, never crashes. Regenerate the table with
// `python3 scripts/dev/make_chat_template_expectations.py --unit-cases`.
#include "server/chat/chat_template.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace kvfold::chat {
namespace {

using ::testing::HasSubstr;

struct Case {
  const char* name;
  const char* source;
  const char* context;
  const char* expected;
};

const Case kCases[] = {
    {"text", R"J(plain text)J", R"J({})J", R"J(plain text)J"},
    {"print_concat", R"J({{ 'a' ~ 1 ~ none }}|{{ 'x' + 'y' }})J", R"J({})J", R"J(a1None|xy)J"},
    {"comment", R"J(a{# hidden #}b)J", R"J({})J", R"J(ab)J"},
    {"dash_strips_all_whitespace",
     R"J(a  
 {%- if true -%} 
 x 
 {%- endif -%}  
 b)J",
     R"J({})J", R"J(axb)J"},
    {"dash_on_print",
     R"J(a 
 {{- 'x' -}} 
 b)J",
     R"J({})J", R"J(axb)J"},
    {"trim_blocks",
     R"J({% if true %}
x
{% endif %}
y
)J",
     R"J({})J",
     R"J(x
y)J"},
    {"lstrip_blocks",
     R"J(  {% if true %}
  x
  {% endif %}
end)J",
     R"J({})J",
     R"J(  x
end)J"},
    {"lstrip_not_after_text_on_line", R"J(a  {% if true %}b{% endif %})J", R"J({})J", R"J(a  b)J"},
    {"plus_disables_lstrip", R"J(  {%+ if true %}x{% endif %})J", R"J({})J", R"J(  x)J"},
    {"plus_disables_trim",
     R"J({% if true +%}
x{% endif %})J",
     R"J({})J",
     R"J(
x)J"},
    {"comment_trim_and_lstrip",
     R"J(  {# c #}
x)J",
     R"J({})J", R"J(x)J"},
    {"print_keeps_newline",
     R"J({{ 'a' }}
b)J",
     R"J({})J",
     R"J(a
b)J"},
    {"if_elif_else",
     R"J({% for n in [1, 2, 3] %}{% if n == 1 %}one{% elif n == 2 %}two{% else %}many{% endif %},{% endfor %})J",
     R"J({})J", R"J(one,two,many,)J"},
    {"for_loop_vars",
     R"J({% for m in messages %}{{ loop.index0 }}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }} {% endfor %})J",
     R"J({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]})J",
     R"J(01TrueFalse44 12FalseFalse43 23FalseFalse42 34FalseTrue41 )J"},
    {"for_filter_and_else",
     R"J({% for m in messages if m.role == 'user' %}{{ m.content }}{{ loop.length }}{% endfor %}|{% for x in [] %}x{% else %}empty{% endfor %})J",
     R"J({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]})J",
     R"J(U12U22|empty)J"},
    {"for_break_continue",
     R"J({% for i in range(10) %}{% if i == 1 %}{% continue %}{% endif %}{% if i > 3 %}{% break %}{% endif %}{{ i }}{% endfor %})J",
     R"J({})J", R"J(023)J"},
    {"for_unpack_items",
     R"J({% for k, v in {'a': 1, 'b': [2]}.items() %}{{ k }}={{ v }};{% endfor %}{% for k, v in {'z': 0} | items %}{{ k }}{{ v }}{% endfor %})J",
     R"J({})J", R"J(a=1;b=[2];z0)J"},
    {"for_over_string_and_dict",
     R"J({% for c in 'héllo' %}[{{ c }}]{% endfor %}{% for k in {'x': 1, 'y': 2} %}{{ k }}{% endfor %})J",
     R"J({})J", R"J([h][é][l][l][o]xy)J"},
    {"set_scope_in_loop",
     R"J({% set x = 'outer' %}{% for i in [1] %}{% set x = 'inner' %}{{ x }}{% endfor %}{{ x }})J",
     R"J({})J", R"J(innerouter)J"},
    {"namespace",
     R"J({% set ns = namespace(count=0, found=false) %}{% for m in messages %}{% set ns.count = ns.count + 1 %}{% if m.role == 'assistant' %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.count }} {{ ns.found }})J",
     R"J({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]})J",
     R"J(4 True)J"},
    {"set_block_and_tuple",
     R"J({% set a, b = 1, 2 %}{% set body %}[{{ a + b }}]{% endset %}{{ body }}{{ body | length }})J",
     R"J({})J", R"J([3]3)J"},
    {"macro",
     R"J({% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', '?') }} {{ greet(name='Cy', punct='.') }})J",
     R"J({})J", R"J(Hi Ann! Hi Bob? Hi Cy.)J"},
    {"literals", R"J({{ [1, 'two', 3.5, none, true] }} {{ {'k': 'v', 'n': [1, {'m': false}]} }})J",
     R"J({})J", R"J([1, 'two', 3.5, None, True] {'k': 'v', 'n': [1, {'m': False}]})J"},
    {"tojson",
     R"J({{ {'b': 1, 'a': [true, none, 1.5, 'é"\n']} | tojson }} {{ [1, 2] | tojson(indent=2) }} {{ 'x' | tojson }})J",
     R"J({})J",
     R"J({"b": 1, "a": [true, null, 1.5, "é\"\n"]} [
  1,
  2
] "x")J"},
    {"attribute_and_subscript",
     R"J({{ messages[1]['content'] }}{{ messages[1].content }}{{ messages[-1].role }}{{ messages[0]['missing'] is defined }})J",
     R"J({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]})J",
     R"J(U1U1userFalse)J"},
    {"slices",
     R"J({{ [1, 2, 3, 4][::-1] }}{{ [1, 2, 3, 4][1:] }}{{ [1, 2, 3, 4][:-1] }}{{ [1, 2, 3, 4][::2] }}{{ 'héllo'[1:3] }}{{ 'abc'[::-1] }}{{ 'abc'[-1] }})J",
     R"J({})J", R"J([4, 3, 2, 1][2, 3, 4][1, 2, 3][1, 3]élcbac)J"},
    {"arithmetic",
     R"J({{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 7 / 2 }} {{ 1 + 2.5 }} {{ 'ab' * 3 }} {{ 4 / 2 }} {{ -(3) }} {{ 1 - 2 * 3 }} {{ (1 - 2) * 3 }})J",
     R"J({})J", R"J(3 -4 1 2 1024 3.5 3.5 ababab 2.0 -3 -5 -3)J"},
    {"float_repr",
     R"J({{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1.5e-7 }} {{ 100.0 }} {{ 1/3 }} {{ 123456789012345678.0 }})J",
     R"J({})J",
     R"J(0.30000000000000004 1e+20 1.5e-07 100.0 0.3333333333333333 1.2345678901234568e+17)J"},
    {"comparisons_and_logic",
     R"J({{ 1 < 2 }} {{ 'a' >= 'b' }} {{ 1 == 1.0 }} {{ 'x' != 'y' }} {{ 0 or 'fallback' }} {{ 'a' and 'b' }} {{ not [] }} {{ 'b' in 'abc' }} {{ 2 not in [1, 2] }} {{ 'k' in {'k': 1} }})J",
     R"J({})J", R"J(True False True True fallback b True True False True)J"},
    {"tests",
     R"J({{ x is defined }}{{ y is undefined }}{{ none is none }}{{ 'a' is string }}{{ {} is mapping }}{{ [] is iterable }}{{ 3 is number }}{{ 9 is divisibleby(3) }}{{ 3 is odd }}{{ 4 is even }}{{ x is not none }}{{ true is true }}{{ 1 is true }}{{ 1 is integer }}{{ 1.0 is float }}{{ 2 is eq 2 }})J",
     R"J({"x": 1})J", R"J(TrueTrueTrueTrueTrueTrueTrueTrueTrueTrueTrueTrueFalseTrueTrueTrue)J"},
    {"ternary",
     R"J({{ 'yes' if x else 'no' }}[{{ 'only' if not x }}]{{ 'a' if false else 'b' if true else 'c' }})J",
     R"J({"x": 1})J", R"J(yes[]b)J"},
    {"string_filters",
     R"J([{{ '  pad 
' | trim }}][{{ 'abc' | upper }}][{{ 'ABC' | lower }}][{{ 'hello WORLD' | capitalize }}][{{ 'a-b-a' | replace('a', 'x') }}][{{ 'a-b-a' | replace('a', 'x', 1) }}][{{ 'héllo' | length }}][{{ 'two words' | title }}])J",
     R"J({})J", R"J([pad][ABC][abc][Hello world][x-b-x][x-b-a][5][Two Words])J"},
    {"list_filters",
     R"J({{ [3, 1, 2] | first }}{{ [3, 1, 2] | last }}{{ [1, 2] | join(', ') }}{{ 'ab' | list }}{{ [1, 2] | length }}{{ [1, 2] | reverse | list }}{{ messages | map(attribute='role') | join(',') }}{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | list }}{{ messages | rejectattr('role', 'in', ['user', 'system']) | list | length }})J",
     R"J({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]})J",
     R"J(321, 2['a', 'b']2[2, 1]system,user,assistant,user['U1', 'U2']1)J"},
    {"default_and_misc_filters",
     R"J({{ missing | default('dflt') }}{{ '' | default('empty', true) }}{{ '' | default('kept') }}{{ 3.14159 | round(2) }}{{ 2.5 | round }}{{ 42 | string ~ '!' }}{{ '7' | int + 1 }}{{ -3 | abs }}{{ '2.5' | float }}{{ [1, 2] | string }})J",
     R"J({})J", R"J(dfltempty3.142.042!832.5[1, 2])J"},
    {"string_methods",
     R"J({{ 'a,b,,c'.split(',') }}{{ ' x y  '.split() }}{{ 'xxhixx'.strip('x') }}{{ '<a>b'.startswith(('<a>', 'z')) }}{{ 'file.txt'.endswith('.txt') }}{{ '

q
'.lstrip('
') }}|{{ 'q

'.rstrip() }}|{{ 'A b'.upper() }}{{ 'A b'.lower() }})J",
     R"J({})J",
     R"J(['a', 'b', '', 'c']['x', 'y']hiTrueTrueq
|q|A Ba b)J"},
    {"undefined_prints_empty",
     R"J([{{ nothing }}][{{ messages[99] }}][{{ {'a': 1}.b }}]{{ nothing | length }}{% for x in nothing %}x{% endfor %})J",
     R"J({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]})J",
     R"J([][][]0)J"},
    {"print_values",
     R"J({{ none }} {{ true }} {{ false }} {{ 'it''s' }} {{ ['it\'s', "q\""] }} {{ {'a': none} }})J",
     R"J({})J", R"J(None True False its ["it's", 'q"'] {'a': None})J"},
    {"dict_methods",
     R"J({{ {'a': 1}.get('a') }}{{ {'a': 1}.get('b', 'z') }}{{ {'a': 1}.get('b') }}{{ {'a': 1, 'b': 2}.keys() | list }}{{ {'a': 1, 'b': 2}.values() | list }})J",
     R"J({})J", R"J(1zNone['a', 'b'][1, 2])J"},
    {"unicode_passthrough", R"J({{ s }}|{{ s | length }}|{{ s[0] }}|{{ s | tojson }})J",
     R"J({"s": "🙂 naïve 世界"})J", R"J(🙂 naïve 世界|10|🙂|"🙂 naïve 世界")J"},
    {"add_generation_prompt_like_hf",
     R"J({% for m in messages %}<|{{ m.role }}|>{{ m.content }}
{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %})J",
     R"J({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}], "add_generation_prompt": true})J",
     R"J(<|system|>S
<|user|>U1
<|assistant|>A1
<|user|>U2
<|assistant|>)J"},
};

class JinjaCaseTest : public ::testing::TestWithParam<Case> {};

TEST_P(JinjaCaseTest, RendersLikeJinja2) {
  const Case& c = GetParam();
  auto parsed = ChatTemplate::Parse(c.source);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto rendered = parsed->Render(nlohmann::ordered_json::parse(c.context));
  ASSERT_TRUE(rendered.ok()) << rendered.status();
  EXPECT_EQ(*rendered, c.expected);
}

INSTANTIATE_TEST_SUITE_P(Constructs, JinjaCaseTest, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name;
                         });

absl::Status RenderStatus(const std::string& source, const char* context = "{}") {
  auto parsed = ChatTemplate::Parse(source);
  if (!parsed.ok()) return parsed.status();
  return parsed->Render(nlohmann::ordered_json::parse(context)).status();
}

TEST(ChatTemplateErrorTest, RaiseExceptionCarriesMessageAndLine) {
  absl::Status s = RenderStatus(
      "line one\n{% if true %}{{ raise_exception('Roles must alternate') }}{% endif %}");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("Roles must alternate"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("line 2"));
}

TEST(ChatTemplateErrorTest, SyntaxErrorsNameTheLine) {
  struct Bad {
    const char* source;
    const char* message;
  };
  const Bad kBad[] = {
      {"a\nb\n{% if x %}never closed", "line 3"},
      {"{% for x in %}{% endfor %}", "line 1"},
      {"\n{% frobnicate %}", "unknown tag 'frobnicate'"},
      {"{{ 'unterminated }}", "unterminated string"},
      {"{{ 1 + }}", "unexpected"},
      {"{# never closed", "comment"},
      {"{% endif %}", "unknown tag 'endif'"},
      {"{{ x", "end of template"},
      {"{% set = 1 %}", "expected a name"},
  };
  const std::string deep = "{{ " + std::string(500, '(') + "1" + std::string(500, ')') + " }}";
  auto deep_parsed = ChatTemplate::Parse(deep);
  ASSERT_FALSE(deep_parsed.ok());
  EXPECT_THAT(std::string(deep_parsed.status().message()), HasSubstr("nested too deeply"));
  for (const Bad& bad : kBad) {
    auto parsed = ChatTemplate::Parse(bad.source);
    ASSERT_FALSE(parsed.ok()) << bad.source;
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(bad.message)) << bad.source;
  }
}

TEST(ChatTemplateErrorTest, RuntimeErrorsAreStatuses) {
  struct Bad {
    const char* source;
    const char* message;
  };
  const Bad kBad[] = {
      {"\n\n{{ no_such_function('x') }}", "line 3"},
      {"{{ no_such_function('x') }}", "'no_such_function' is undefined"},
      {"{{ missing.attribute }}", "'missing' is undefined"},
      {"{{ 'a' + 1 }}", "concatenate"},
      {"{{ 1 // 0 }}", "division"},
      {"{{ x | no_such_filter }}", "no filter named 'no_such_filter'"},
      {"{{ 1 is no_such_test }}", "no test named"},
      {"{% for x in none %}{% endfor %}", "not iterable"},
      {"{% set s = 'str' %}{% set s.attr = 1 %}", "non-namespace"},
      {"{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}", "too deeply"},
      {"{{ 'x' * 1000000000000 }}", "too large"},
      {"{{ range(100000000) | length }}", "too large"},
  };
  for (const Bad& bad : kBad) {
    absl::Status s = RenderStatus(bad.source);
    ASSERT_FALSE(s.ok()) << bad.source;
    EXPECT_THAT(std::string(s.message()), HasSubstr(bad.message)) << bad.source;
  }
}

TEST(ChatTemplateErrorTest, ContextMustBeAnObject) {
  auto parsed = ChatTemplate::Parse("x");
  ASSERT_TRUE(parsed.ok());
  EXPECT_FALSE(parsed->Render(nlohmann::ordered_json::array()).ok());
}

TEST(ChatTemplateTest, PlainJsonContextRenders) {
  auto parsed = ChatTemplate::Parse("{{ messages[0].content }}|{{ add_generation_prompt }}");
  ASSERT_TRUE(parsed.ok());
  nlohmann::json context = {{"messages", {{{"role", "user"}, {"content", "hi"}}}},
                            {"add_generation_prompt", true}};
  auto rendered = parsed->Render(context);
  ASSERT_TRUE(rendered.ok()) << rendered.status();
  EXPECT_EQ(*rendered, "hi|True");
}

// Random splices of template fragments: parsing and rendering may fail, but must return.
TEST(ChatTemplateFuzzTest, GarbageNeverCrashes) {
  const std::vector<std::string> pieces = {
      "{{",     "}}",     "{%",       "%}",         "{#",
      "#}",     "-",      "+",        " ",          "\n",
      "if",     "for",    "in",       "endif",      "endfor",
      "else",   "elif",   "set",      "x",          "messages",
      "loop",   ".",      "[",        "]",          "(",
      ")",      "{",      "}",        "'",          "\"",
      "|",      "length", "is",       "not",        "defined",
      "1",      "0",      ":",        "::-1",       ",",
      "=",      "==",     "~",        "*",          "**",
      "//",     "macro",  "endmacro", "namespace(", "raise_exception(",
      "tojson", "and",    "or",       "none",       "break",
      "\\",     "é",      "🙂",     "range(",     "9999999999999999999"};
  std::mt19937 rng(12345);
  int parsed_ok = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string source;
    size_t n = rng() % 40;
    for (size_t i = 0; i < n; ++i) source += pieces[rng() % pieces.size()];
    auto parsed = ChatTemplate::Parse(source);
    if (!parsed.ok()) continue;
    ++parsed_ok;
    auto rendered = parsed->Render(nlohmann::ordered_json::parse(
        R"({"messages": [{"role": "user", "content": "hi"}], "x": [1, "a", null]})"));
    (void)rendered;
  }
  EXPECT_GT(parsed_ok, 0);  // some garbage is valid Jinja, so rendering was exercised too
}

// Random byte edits of a realistic template (deletions, duplications, stray characters).
TEST(ChatTemplateFuzzTest, MutatedTemplatesNeverCrash) {
  const std::string base =
      "{%- set ns = namespace(last=messages|length - 1) %}\n"
      "{%- for message in messages[::-1] if message.role != 'tool' %}\n"
      "  {%- if loop.first and message.content is string %}{{- '<|' + message.role + '|>\\n' }}"
      "{%- elif message.content.split('</think>')[-1].lstrip('\\n') %}{{ message | tojson }}"
      "{%- else %}{{ raise_exception('bad ' ~ loop.index0) }}{%- endif %}\n"
      "{%- endfor %}{# note #}{% if add_generation_prompt %}{{ 'gen' }}{% endif %}";
  const std::string stray = "{}%#-+()[]'\"|.:~ \n\\xé";
  std::mt19937 rng(777);
  for (int iter = 0; iter < 3000; ++iter) {
    std::string source = base;
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !source.empty(); ++e) {
      size_t at = rng() % source.size();
      switch (rng() % 3) {
        case 0:
          source.erase(at, 1 + rng() % 8);
          break;
        case 1:
          source.insert(at, source.substr(rng() % source.size(), rng() % 16));
          break;
        default:
          source.insert(at, 1, stray[rng() % stray.size()]);
      }
    }
    auto parsed = ChatTemplate::Parse(source);
    if (!parsed.ok()) continue;
    (void)parsed->Render(nlohmann::ordered_json::parse(
        R"({"messages": [{"role": "user", "content": "a</think>\nb"}, {"role": "tool"}],
            "add_generation_prompt": true})"));
  }
}

}  // namespace
}  // namespace kvfold::chat
