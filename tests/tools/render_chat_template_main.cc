// render-chat-template TEMPLATE_FILE CONTEXT_JSON_FILE: prints the rendered prompt, or the error
// and exit status 1. tests/server/chat_template_test.py holds it against Python's jinja2.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "server/http/chat_template.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: render-chat-template TEMPLATE CONTEXT.json\n");
    return 2;
  }
  std::ifstream t(argv[1]), c(argv[2]);
  std::stringstream source, context;
  source << t.rdbuf();
  context << c.rdbuf();
  const nlohmann::json ctx = nlohmann::json::parse(context.str(), nullptr, false);
  if (ctx.is_discarded()) return 2;
  absl::StatusOr<std::string> out = nsa::RenderChatTemplate(source.str(), ctx);
  if (!out.ok()) {
    std::fprintf(stderr, "%s\n", std::string(out.status().message()).c_str());
    return 1;
  }
  std::fwrite(out->data(), 1, out->size(), stdout);
  return 0;
}
