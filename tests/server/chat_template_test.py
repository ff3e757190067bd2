"""The C++ chat-template renderer against Python's jinja2 (Debian's python3-jinja2), configured as
transformers configures it (trim_blocks, lstrip_blocks, raise_exception): the same prompt, byte
for byte, for the templates of well-known checkpoints' shapes and for the built-ins.

Run: /usr/bin/python3 tests/server/chat_template_test.py --renderer BIN
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import unittest

import jinja2

ARGS = None

TEMPLATES = {
    "chatml": ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
               "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"),
    # Llama-2 chat's shape: system folded into the first user turn, alternation enforced.
    "llama2": ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
               "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
               "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
               "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
               "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
               "{% if loop.index0 == 0 and system_message != false %}"
               "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
               "{% else %}{% set content = message['content'] %}{% endif %}"
               "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
               "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"),
    # Zephyr's shape: multi-line, whitespace control, loop.last.
    "zephyr": ("{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + message['content'] + eos_token }}\n"
               "{% elif message['role'] == 'system' %}\n{{ '<|system|>\\n' + message['content'] + eos_token }}\n"
               "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n"
               "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"),
    # Indented blocks, {%- -%} control, filters, tests, string methods, ~.
    "indented": ("{{- bos_token }}\n{%- for m in messages %}\n    {%- if m.role is defined and m.role == 'system' %}\n"
                 "        {{- '[SYS] ' ~ m.content | trim ~ '\\n' }}\n    {%- else %}\n"
                 "        {{- m.role | upper ~ ': ' ~ m['content'].strip() }}\n        {% if not loop.last %}\n"
                 "{{ '\\n' }}{% endif %}\n    {%- endif %}\n{%- endfor %}\n"
                 "{%- if add_generation_prompt %}{{ '\\nASSISTANT:' }}{% endif %}"),
    "counts": ("{% set n = messages | length %}{{ n }} messages{% for m in messages if true %}{% endfor %}"),
}
# 'counts' uses a loop filter jinja2 has and we do not: the renderer must refuse it cleanly.
UNSUPPORTED = {"counts"}

CONVERSATIONS = [
    [{"role": "user", "content": "Hello there"}],
    [{"role": "system", "content": "  Be brief.  "}, {"role": "user", "content": "What is NSA?"},
     {"role": "assistant", "content": "Sparse attention."}, {"role": "user", "content": "  More?\n"}],
    [{"role": "user", "content": "naïve café 日本語"}, {"role": "assistant", "content": "ok"}],
]


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


class ChatTemplateTest(unittest.TestCase):
    def render_cpp(self, template, context):
        with tempfile.TemporaryDirectory() as d:
            t, c = os.path.join(d, "t.jinja"), os.path.join(d, "c.json")
            with open(t, "w") as f:
                f.write(template)
            with open(c, "w") as f:
                json.dump(context, f)
            r = subprocess.run([ARGS.renderer, t, c], capture_output=True)
            return r.returncode, r.stdout.decode(), r.stderr.decode()

    def test_same_prompt_as_jinja2(self):
        env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        checked = 0
        for name, template in TEMPLATES.items():
            for conversation in CONVERSATIONS:
                for gen in (True, False):
                    context = {"messages": conversation, "add_generation_prompt": gen, "bos_token": "<s>",
                               "eos_token": "</s>"}
                    rc, out, err = self.render_cpp(template, context)
                    if name in UNSUPPORTED:
                        self.assertEqual(rc, 1, f"{name}: should refuse, rendered {out!r}")
                        self.assertIn("chat template", err)
                        continue
                    try:
                        want = env.from_string(template).render(**context)
                    except jinja2.exceptions.TemplateError as e:
                        self.assertEqual(rc, 1, f"{name}: jinja2 raised {e}, we rendered {out!r}")
                        self.assertIn(str(e), err)
                        continue
                    self.assertEqual(rc, 0, f"{name}: {err}")
                    self.assertEqual(out, want, f"{name} with {len(conversation)} messages, add_generation_prompt={gen}")
                    checked += 1
        self.assertGreaterEqual(checked, 20)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--renderer", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest)
