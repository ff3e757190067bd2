// Chat templates: the Jinja subset that Hugging Face chat templates use, rendered the way
// transformers does (trim_blocks and lstrip_blocks on), plus named built-ins for checkpoints
// without one.
//
// Supported: {{ expr }}, {% if/elif/else/endif %}, {% for x in xs %} with `loop` (index, index0,
// first, last, length) and {% else %}, {% set x = expr %}, {# comments #}, whitespace control
// ({%- -%} {{- -}}); expressions with literals (strings, numbers, true/false/none, lists),
// variables, attribute and item access, slices, `not and or`, comparisons, `in`, `is [not]
// defined/none/string/mapping/iterable`, `+ - * / % ~`, the filters trim, length, upper, lower,
// tojson, string, default, first, last, and the string methods strip, lstrip, rstrip,
// startswith, endswith, upper, lower, split; raise_exception(msg). Anything else is an error that
// names it, never a silently wrong prompt.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace nsa {

// Renders `source` with `context` (messages, add_generation_prompt, bos_token, eos_token, ...).
absl::StatusOr<std::string> RenderChatTemplate(const std::string& source, const nlohmann::json& context);

// A named built-in template ("chatml", "llama2", "plain"), or nullptr.
const char* BuiltinChatTemplate(const std::string& name);

// What a --chat-template flag names: "" stays "" (use the checkpoint's), a built-in's name stays
// as it is (OpenAIServerOptions resolves it), anything else is read as a template file.
absl::StatusOr<std::string> ChatTemplateFromFlag(const std::string& flag);

}  // namespace nsa
