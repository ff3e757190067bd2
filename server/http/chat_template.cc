#include "server/http/chat_template.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <cmath>
#include <map>
#include <memory>
#include <vector>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace nsa {
namespace {

using nlohmann::json;

// ---- template lexing: text and tags -----------------------------------------------------------

struct Piece {
  enum Kind { kText, kExpr, kStmt } kind;
  std::string body;
};

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

absl::StatusOr<std::vector<Piece>> Split(const std::string& src) {
  std::vector<Piece> out;
  size_t i = 0;
  bool trim_next = false;  // a "-" before the closing of the previous tag
  bool after_block = false;  // trim_blocks: drop one newline after a block tag
  while (i < src.size()) {
    size_t open = src.find('{', i);
    while (open != std::string::npos && open + 1 < src.size() && src[open + 1] != '{' && src[open + 1] != '%' &&
           src[open + 1] != '#') {
      open = src.find('{', open + 1);
    }
    if (open + 1 >= src.size()) open = std::string::npos;
    std::string text = src.substr(i, open == std::string::npos ? std::string::npos : open - i);
    const std::string raw = text;
    if (after_block && !text.empty() && text[0] == '\n') text.erase(0, 1);
    if (trim_next) {
      size_t k = 0;
      while (k < text.size() && IsSpace(text[k])) ++k;
      text.erase(0, k);
    }
    if (open == std::string::npos) {
      out.push_back({Piece::kText, text});
      break;
    }
    const char type = src[open + 1];
    const bool strip_before = open + 2 < src.size() && src[open + 2] == '-';
    if (strip_before) {
      while (!text.empty() && IsSpace(text.back())) text.pop_back();
    } else if (type == '%' || type == '#') {
      // lstrip_blocks: spaces and tabs between the start of a line and a block tag go.
      // Judged on the source text: trim_blocks may already have taken its newline.
      const size_t nl = raw.rfind('\n');
      const size_t from = nl == std::string::npos ? 0 : nl + 1;
      const bool line_start = nl != std::string::npos || i == 0;
      const size_t blanks = raw.size() - from;
      if (line_start && raw.find_first_not_of(" \t", from) == std::string::npos && blanks <= text.size()) {
        text.erase(text.size() - blanks);
      }
    }
    out.push_back({Piece::kText, text});
    const std::string close = type == '{' ? "}}" : type == '%' ? "%}" : "#}";
    const size_t end = src.find(close, open + 2);
    if (end == std::string::npos) return absl::InvalidArgumentError("chat template: unclosed tag");
    size_t body_start = open + 2 + (strip_before ? 1 : 0);
    size_t body_end = end;
    trim_next = body_end > body_start && src[body_end - 1] == '-';
    if (trim_next) --body_end;
    after_block = type != '{';
    if (type != '#') out.push_back({type == '{' ? Piece::kExpr : Piece::kStmt, src.substr(body_start, body_end - body_start)});
    i = end + 2;
  }
  return out;
}

// ---- expressions --------------------------------------------------------------------------

struct Token {
  enum Kind { kName, kString, kNumber, kOp, kEnd } kind;
  std::string text;
  double number = 0;
};

absl::StatusOr<std::vector<Token>> Lex(const std::string& s) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (IsSpace(c)) {
      ++i;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      out.push_back({Token::kName, s.substr(i, j - i)});
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '.')) ++j;
      out.push_back({Token::kNumber, s.substr(i, j - i), std::stod(s.substr(i, j - i))});
      i = j;
    } else if (c == '\'' || c == '"') {
      std::string v;
      size_t j = i + 1;
      while (j < s.size() && s[j] != c) {
        if (s[j] == '\\' && j + 1 < s.size()) {
          const char e = s[++j];
          v += e == 'n' ? '\n' : e == 't' ? '\t' : e;
        } else {
          v += s[j];
        }
        ++j;
      }
      if (j >= s.size()) return absl::InvalidArgumentError("chat template: unterminated string");
      out.push_back({Token::kString, v});
      i = j + 1;
    } else {
      static const char* kOps[] = {"==", "!=", "<=", ">=", "(", ")", "[", "]", ".", ",", ":", "|", "+", "-",
                                   "*",  "/",  "%",  "~",  "<", ">", "=", "{", "}"};
      bool matched = false;
      for (const char* op : kOps) {
        if (s.compare(i, std::strlen(op), op) == 0) {
          out.push_back({Token::kOp, op});
          i += std::strlen(op);
          matched = true;
          break;
        }
      }
      if (!matched) return absl::InvalidArgumentError(absl::StrCat("chat template: unexpected character '", std::string(1, c), "'"));
    }
  }
  out.push_back({Token::kEnd, ""});
  return out;
}

bool Truthy(const json& v) {
  if (v.is_null()) return false;
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_number()) return v.get<double>() != 0;
  if (v.is_string() || v.is_array() || v.is_object()) return !v.empty();
  return true;
}

std::string Str(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "None";
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  return v.dump();
}

// A marker for undefined variables (distinct from none).
const json& Undefined() {
  static const json u = json::object({{"__undefined__", true}});
  return u;
}
bool IsUndefined(const json& v) { return v.is_object() && v.size() == 1 && v.contains("__undefined__"); }

class Scope {
 public:
  explicit Scope(const json& globals) { frames_.push_back(globals.is_object() ? globals : json::object()); }
  json Get(const std::string& name) const {
    for (auto it = frames_.rbegin(); it != frames_.rend(); ++it) {
      if (it->contains(name)) return (*it)[name];
    }
    return Undefined();
  }
  void Set(const std::string& name, json v) { frames_.back()[name] = std::move(v); }
  void Push() { frames_.push_back(json::object()); }
  void Pop() { frames_.pop_back(); }

 private:
  std::vector<json> frames_;
};

class Parser {
 public:
  Parser(const std::vector<Token>& t, Scope& scope) : t_(t), scope_(scope) {}
  absl::StatusOr<json> Parse() {
    json v = Or();
    if (!error_.ok()) return error_;
    return v;
  }
  bool AtEnd() const { return t_[p_].kind == Token::kEnd; }
  size_t pos() const { return p_; }
  const absl::Status& error() const { return error_; }

 private:
  bool Op(const char* op) {
    if (t_[p_].kind == Token::kOp && t_[p_].text == op) return ++p_, true;
    return false;
  }
  bool Word(const char* w) {
    if (t_[p_].kind == Token::kName && t_[p_].text == w) return ++p_, true;
    return false;
  }
  json Fail(std::string message) {
    if (error_.ok()) error_ = absl::InvalidArgumentError(absl::StrCat("chat template: ", message));
    return nullptr;
  }

  json Or() {
    json v = And();
    while (Word("or")) {
      json r = And();
      v = Truthy(v) ? v : r;
    }
    return v;
  }
  json And() {
    json v = Not();
    while (Word("and")) {
      json r = Not();
      v = Truthy(v) ? r : v;
    }
    return v;
  }
  json Not() {
    if (Word("not")) return !Truthy(Not());
    return Compare();
  }
  json Compare() {
    json v = Concat();
    while (true) {
      if (Op("==")) {
        v = v == Concat();
      } else if (Op("!=")) {
        v = v != Concat();
      } else if (Op("<")) {
        v = v < Concat();
      } else if (Op(">")) {
        v = v > Concat();
      } else if (Op("<=")) {
        v = v <= Concat();
      } else if (Op(">=")) {
        v = v >= Concat();
      } else if (Word("in")) {
        v = Contains(Concat(), v);
      } else if (t_[p_].kind == Token::kName && t_[p_].text == "not" && t_[p_ + 1].text == "in") {
        p_ += 2;
        v = !Contains(Concat(), v);
      } else if (Word("is")) {
        const bool negate = Word("not");
        const std::string test = t_[p_++].text;
        bool r;
        if (test == "defined") {
          r = !IsUndefined(v);
        } else if (test == "none") {
          r = v.is_null();
        } else if (test == "string") {
          r = v.is_string();
        } else if (test == "mapping") {
          r = v.is_object() && !IsUndefined(v);
        } else if (test == "iterable" || test == "sequence") {
          r = v.is_array() || v.is_string();
        } else if (test == "true" || test == "false") {
          r = v.is_boolean() && v.get<bool>() == (test == "true");
        } else {
          return Fail("unknown test \"" + test + "\"");
        }
        v = negate ? !r : r;
      } else {
        return v;
      }
    }
  }
  json Contains(const json& haystack, const json& needle) {
    if (haystack.is_string() && needle.is_string()) return haystack.get<std::string>().find(needle.get<std::string>()) != std::string::npos;
    if (haystack.is_array()) {
      for (const json& x : haystack) {
        if (x == needle) return true;
      }
      return false;
    }
    if (haystack.is_object() && needle.is_string()) return haystack.contains(needle.get<std::string>());
    return false;
  }
  json Concat() {
    json v = Sum();
    while (Op("~")) v = Str(v) + Str(Sum());
    return v;
  }
  json Sum() {
    json v = Product();
    while (true) {
      if (Op("+")) {
        json r = Product();
        if (v.is_string() && r.is_string()) {
          v = v.get<std::string>() + r.get<std::string>();
        } else if (v.is_array() && r.is_array()) {
          for (const json& x : r) v.push_back(x);
        } else if (v.is_number() && r.is_number()) {
          v = v.is_number_integer() && r.is_number_integer() ? json(v.get<int64_t>() + r.get<int64_t>())
                                                             : json(v.get<double>() + r.get<double>());
        } else {
          return Fail("cannot add " + std::string(v.type_name()) + " and " + r.type_name());
        }
      } else if (Op("-")) {
        json r = Product();
        if (!v.is_number() || !r.is_number()) return Fail("'-' needs numbers");
        v = v.is_number_integer() && r.is_number_integer() ? json(v.get<int64_t>() - r.get<int64_t>())
                                                           : json(v.get<double>() - r.get<double>());
      } else {
        return v;
      }
    }
  }
  json Product() {
    json v = Unary();
    while (true) {
      const bool mul = Op("*"), div = !mul && Op("/"), mod = !mul && !div && Op("%");
      if (!mul && !div && !mod) return v;
      json r = Unary();
      if (!v.is_number() || !r.is_number()) return Fail("arithmetic needs numbers");
      if (mod) {
        if (r.get<int64_t>() == 0) return Fail("modulo by zero");
        v = v.get<int64_t>() % r.get<int64_t>();
      } else if (div) {
        v = v.get<double>() / r.get<double>();
      } else {
        v = v.is_number_integer() && r.is_number_integer() ? json(v.get<int64_t>() * r.get<int64_t>())
                                                           : json(v.get<double>() * r.get<double>());
      }
    }
  }
  json Unary() {
    if (Op("-")) {
      json v = Unary();
      if (!v.is_number()) return Fail("unary '-' needs a number");
      return v.is_number_integer() ? json(-v.get<int64_t>()) : json(-v.get<double>());
    }
    return Filtered();
  }
  json Filtered() {
    json v = Postfix();
    while (Op("|")) {
      const std::string name = t_[p_++].text;
      std::vector<json> args;
      if (Op("(")) args = Args(")");
      if (name == "trim") {
        v = Strip(Str(v), true, true);
      } else if (name == "length" || name == "count") {
        v = v.is_string() ? v.get<std::string>().size() : v.size();
      } else if (name == "upper" || name == "lower") {
        std::string s = Str(v);
        for (char& c : s) c = static_cast<char>(name == "upper" ? std::toupper(c) : std::tolower(c));
        v = s;
      } else if (name == "tojson") {
        v = v.dump();
      } else if (name == "string") {
        v = Str(v);
      } else if (name == "default") {
        if (IsUndefined(v)) v = args.empty() ? json("") : args[0];
      } else if (name == "first" || name == "last") {
        if (!v.is_array() || v.empty()) return Fail("'" + name + "' needs a non-empty list");
        v = name == "first" ? v.front() : v.back();
      } else {
        return Fail("unknown filter \"" + name + "\"");
      }
    }
    return v;
  }
  std::vector<json> Args(const char* close) {
    std::vector<json> args;
    if (Op(close)) return args;
    do {
      if (t_[p_].kind == Token::kName && t_[p_ + 1].kind == Token::kOp && t_[p_ + 1].text == "=") p_ += 2;  // kwarg name
      args.push_back(Or());
    } while (Op(","));
    if (!Op(close)) Fail(std::string("expected '") + close + "'");
    return args;
  }
  static std::string Strip(std::string s, bool left, bool right) {
    if (right) {
      while (!s.empty() && IsSpace(s.back())) s.pop_back();
    }
    if (left) {
      size_t k = 0;
      while (k < s.size() && IsSpace(s[k])) ++k;
      s.erase(0, k);
    }
    return s;
  }
  json Method(const json& self, const std::string& name, const std::vector<json>& args) {
    if (self.is_string()) {
      const std::string s = self.get<std::string>();
      if (name == "strip") return Strip(s, true, true);
      if (name == "lstrip") return Strip(s, true, false);
      if (name == "rstrip") return Strip(s, false, true);
      if (name == "upper" || name == "lower") {
        std::string r = s;
        for (char& c : r) c = static_cast<char>(name == "upper" ? std::toupper(c) : std::tolower(c));
        return r;
      }
      if ((name == "startswith" || name == "endswith") && args.size() == 1 && args[0].is_string()) {
        const std::string a = args[0].get<std::string>();
        if (a.size() > s.size()) return false;
        return name == "startswith" ? s.compare(0, a.size(), a) == 0 : s.compare(s.size() - a.size(), a.size(), a) == 0;
      }
      if (name == "split") {
        json parts = json::array();
        const std::string sep = args.empty() ? " " : Str(args[0]);
        size_t start = 0, at;
        while ((at = s.find(sep, start)) != std::string::npos) parts.push_back(s.substr(start, at - start)), start = at + sep.size();
        parts.push_back(s.substr(start));
        return parts;
      }
    }
    if (self.is_object() && name == "items") {
      json items = json::array();
      for (auto it = self.begin(); it != self.end(); ++it) items.push_back(json::array({it.key(), it.value()}));
      return items;
    }
    if (self.is_object() && name == "get" && !args.empty()) {
      const std::string key = Str(args[0]);
      return self.contains(key) ? self[key] : (args.size() > 1 ? args[1] : json(nullptr));
    }
    return Fail("unknown method \"" + name + "\" on " + self.type_name());
  }
  json Index(const json& v, const json& key) {
    if (v.is_object() && key.is_string()) return v.contains(key.get<std::string>()) ? v[key.get<std::string>()] : Undefined();
    if ((v.is_array() || v.is_string()) && key.is_number_integer()) {
      int64_t i = key.get<int64_t>();
      const int64_t n = static_cast<int64_t>(v.size());
      if (v.is_string()) return i < 0 ? json(v.get<std::string>().substr(n + i, 1)) : json(v.get<std::string>().substr(i, 1));
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Undefined();
      return v[i];
    }
    return Undefined();
  }
  json Postfix() {
    json v = Primary();
    while (true) {
      if (Op(".")) {
        const std::string name = t_[p_++].text;
        if (Op("(")) {
          v = Method(v, name, Args(")"));
        } else {
          v = Index(v, json(name));
        }
      } else if (Op("[")) {
        json a = nullptr, b = nullptr;
        bool slice = false;
        if (!(t_[p_].kind == Token::kOp && t_[p_].text == ":")) a = Or();
        if (Op(":")) {
          slice = true;
          if (!(t_[p_].kind == Token::kOp && t_[p_].text == "]")) b = Or();
        }
        if (!Op("]")) return Fail("expected ']'");
        if (slice) {
          if (!v.is_array()) return Fail("slices need a list");
          const int64_t n = static_cast<int64_t>(v.size());
          int64_t lo = a.is_null() ? 0 : a.get<int64_t>(), hi = b.is_null() ? n : b.get<int64_t>();
          if (lo < 0) lo += n;
          if (hi < 0) hi += n;
          lo = std::clamp<int64_t>(lo, 0, n), hi = std::clamp<int64_t>(hi, 0, n);
          json out = json::array();
          for (int64_t i = lo; i < hi; ++i) out.push_back(v[i]);
          v = out;
        } else {
          v = Index(v, a);
        }
      } else {
        return v;
      }
    }
  }
  json Primary() {
    const Token& tok = t_[p_];
    if (tok.kind == Token::kString) return ++p_, json(tok.text);
    if (tok.kind == Token::kNumber) {
      ++p_;
      return tok.text.find('.') == std::string::npos ? json(static_cast<int64_t>(tok.number)) : json(tok.number);
    }
    if (Op("(")) {
      json v = Or();
      if (!Op(")")) return Fail("expected ')'");
      return v;
    }
    if (Op("[")) {
      json list = json::array();
      for (json& x : Args("]")) list.push_back(std::move(x));
      return list;
    }
    if (tok.kind == Token::kName) {
      ++p_;
      if (tok.text == "true" || tok.text == "True") return true;
      if (tok.text == "false" || tok.text == "False") return false;
      if (tok.text == "none" || tok.text == "None") return nullptr;
      if (tok.text == "raise_exception" && Op("(")) {
        std::vector<json> args = Args(")");
        return Fail("the template raised: " + (args.empty() ? std::string() : Str(args[0])));
      }
      return scope_.Get(tok.text);
    }
    return Fail("unexpected \"" + tok.text + "\"");
  }

  const std::vector<Token>& t_;
  Scope& scope_;
  size_t p_ = 0;
  absl::Status error_;
};

absl::StatusOr<json> Eval(const std::string& expr, Scope& scope) {
  absl::StatusOr<std::vector<Token>> tokens = Lex(expr);
  if (!tokens.ok()) return tokens.status();
  Parser parser(*tokens, scope);
  absl::StatusOr<json> v = parser.Parse();
  if (v.ok() && !parser.AtEnd()) return absl::InvalidArgumentError("chat template: trailing input in \"" + expr + "\"");
  return v;
}

// ---- statements ----------------------------------------------------------------------------

class Renderer {
 public:
  Renderer(std::vector<Piece> pieces, const json& context) : pieces_(std::move(pieces)), scope_(context) {}

  absl::StatusOr<std::string> Run() {
    std::string out;
    size_t i = 0;
    absl::Status s = Block(i, out, {});
    if (!s.ok()) return s;
    if (i != pieces_.size()) return absl::InvalidArgumentError("chat template: unexpected \"" + pieces_[i].body + "\"");
    return out;
  }

 private:
  static std::string Keyword(const std::string& stmt) {
    size_t a = 0;
    while (a < stmt.size() && IsSpace(stmt[a])) ++a;
    size_t b = a;
    while (b < stmt.size() && !IsSpace(stmt[b])) ++b;
    return stmt.substr(a, b - a);
  }
  static std::string Rest(const std::string& stmt) {
    const std::string k = Keyword(stmt);
    return stmt.substr(stmt.find(k) + k.size());
  }

  // Renders pieces from i until one of `ends` (left at i) or the end; emit=false skips output.
  absl::Status Block(size_t& i, std::string& out, const std::vector<std::string>& ends, bool emit = true) {
    while (i < pieces_.size()) {
      const Piece& p = pieces_[i];
      if (p.kind == Piece::kText) {
        if (emit) out += p.body;
        ++i;
      } else if (p.kind == Piece::kExpr) {
        if (emit) {
          absl::StatusOr<json> v = Eval(p.body, scope_);
          if (!v.ok()) return v.status();
          if (!IsUndefined(*v)) out += Str(*v);
        }
        ++i;
      } else {
        const std::string k = Keyword(p.body);
        for (const std::string& e : ends) {
          if (k == e) return absl::OkStatus();
        }
        absl::Status s;
        if (k == "if") {
          s = If(i, out, emit);
        } else if (k == "for") {
          s = For(i, out, emit);
        } else if (k == "set") {
          const std::string rest = Rest(p.body);
          const size_t eq = rest.find('=');
          if (eq == std::string::npos) return absl::InvalidArgumentError("chat template: set without '='");
          std::string name = rest.substr(0, eq);
          while (!name.empty() && IsSpace(name.back())) name.pop_back();
          while (!name.empty() && IsSpace(name.front())) name.erase(0, 1);
          if (emit) {
            absl::StatusOr<json> v = Eval(rest.substr(eq + 1), scope_);
            if (!v.ok()) return v.status();
            scope_.Set(name, *v);
          }
          ++i;
        } else {
          return absl::InvalidArgumentError("chat template: unsupported statement \"" + k + "\"");
        }
        if (!s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }

  absl::Status If(size_t& i, std::string& out, bool emit) {
    bool taken = false;
    std::string cond = Rest(pieces_[i].body);
    ++i;
    while (true) {
      bool run = false;
      if (!taken && emit) {
        if (cond.empty()) {
          run = true;  // else
        } else {
          absl::StatusOr<json> v = Eval(cond, scope_);
          if (!v.ok()) return v.status();
          run = Truthy(*v);
        }
      }
      absl::Status s = Block(i, out, {"elif", "else", "endif"}, run);
      if (!s.ok()) return s;
      taken |= run;
      if (i >= pieces_.size()) return absl::InvalidArgumentError("chat template: if without endif");
      const std::string k = Keyword(pieces_[i].body);
      if (k == "endif") return ++i, absl::OkStatus();
      cond = k == "elif" ? Rest(pieces_[i].body) : "";
      ++i;
    }
  }

  absl::Status For(size_t& i, std::string& out, bool emit) {
    const std::string rest = Rest(pieces_[i].body);
    const size_t in = rest.find(" in ");
    if (in == std::string::npos) return absl::InvalidArgumentError("chat template: for without 'in'");
    std::string var = rest.substr(0, in);
    while (!var.empty() && IsSpace(var.front())) var.erase(0, 1);
    while (!var.empty() && IsSpace(var.back())) var.pop_back();
    const size_t body = ++i;
    json items = json::array();
    if (emit) {
      absl::StatusOr<json> v = Eval(rest.substr(in + 4), scope_);
      if (!v.ok()) return v.status();
      if (v->is_array()) {
        items = *v;
      } else if (v->is_object() && !IsUndefined(*v)) {
        for (auto it = v->begin(); it != v->end(); ++it) items.push_back(it.key());
      }
    }
    const size_t n = items.size();
    size_t end = body;
    for (size_t k = 0; k < n; ++k) {
      scope_.Push();
      scope_.Set(var, items[k]);
      scope_.Set("loop", {{"index", k + 1}, {"index0", k}, {"first", k == 0}, {"last", k + 1 == n}, {"length", n}});
      end = body;
      absl::Status s = Block(end, out, {"endfor", "else"}, true);
      scope_.Pop();
      if (!s.ok()) return s;
    }
    // Skip (or, for an empty loop, render) the else branch, then the endfor.
    end = body;
    absl::Status s = Block(end, out, {"endfor", "else"}, false);
    if (!s.ok()) return s;
    if (end < pieces_.size() && Keyword(pieces_[end].body) == "else") {
      ++end;
      s = Block(end, out, {"endfor"}, emit && n == 0);
      if (!s.ok()) return s;
    }
    if (end >= pieces_.size()) return absl::InvalidArgumentError("chat template: for without endfor");
    i = end + 1;
    return absl::OkStatus();
  }

  std::vector<Piece> pieces_;
  Scope scope_;
};

}  // namespace

absl::StatusOr<std::string> RenderChatTemplate(const std::string& source, const json& context) {
  absl::StatusOr<std::vector<Piece>> pieces = Split(source);
  if (!pieces.ok()) return pieces.status();
  return Renderer(std::move(*pieces), context).Run();
}

const char* BuiltinChatTemplate(const std::string& name) {
  static const std::map<std::string, const char*> kTemplates = {
      {"chatml",
       "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
       "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"},
      {"llama2",
       "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}{{ '<<SYS>>\\n' + message['content'] + "
       "'\\n<</SYS>>\\n\\n' }}{% elif message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}"
       "{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}{% endfor %}"},
      {"plain",
       "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\\n' }}{% endfor %}"
       "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"},
  };
  auto it = kTemplates.find(name);
  return it == kTemplates.end() ? nullptr : it->second;
}

absl::StatusOr<std::string> ChatTemplateFromFlag(const std::string& flag) {
  if (flag.empty() || BuiltinChatTemplate(flag) != nullptr) return flag;
  std::ifstream in(flag);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("--chat-template: \"", flag, "\" is neither a built-in (chatml, llama2, plain) nor a readable file"));
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace nsa
