#include "server/chat/lexer.h"

#include <cctype>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kvfold::chat {
namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// jinja2 normalizes \r\n and \r to \n and drops one trailing newline.
std::string Normalize(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out += source[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

void AppendUtf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

class Lexer {
 public:
  explicit Lexer(std::string source) : src_(std::move(source)) {}

  absl::StatusOr<std::vector<Token>> Run() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      size_t start = FindTagStart(pos_);
      std::string text = src_.substr(pos_, start - pos_);
      if (start == src_.size()) {
        Emit(Token::kText, text);
        Advance(start);
        break;
      }
      char kind = src_[start + 1];  // '{', '%' or '#'
      char sign = start + 2 < src_.size() ? src_[start + 2] : '\0';
      if (sign == '-') {
        size_t end = text.size();
        while (end > 0 && IsSpace(text[end - 1])) --end;
        text.resize(end);
      } else if (sign != '+' && kind != '{') {
        size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if (l_pos > 0 || line_starting) {
          bool only_space = l_pos < text.size();
          for (size_t i = l_pos; i < text.size(); ++i) only_space &= IsSpace(text[i]);
          if (only_space) text.resize(l_pos);
        }
      }
      if (!text.empty()) Emit(Token::kText, text);
      Advance(start);
      size_t after_begin = start + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      if (kind == '#') {
        size_t close = src_.find("#}", after_begin);
        if (close == std::string::npos) return Error("missing end of comment tag");
        char before = close > after_begin ? src_[close - 1] : '\0';
        Advance(close + 2);
        line_starting = ConsumeAfterEnd(before);
        continue;
      }
      Emit(kind == '{' ? Token::kVarBegin : Token::kBlockBegin, "");
      Advance(after_begin);
      auto ended = LexTag(kind == '{' ? '}' : '%');
      if (!ended.ok()) return ended.status();
      line_starting = *ended;
    }
    Emit(Token::kEof, "");
    return std::move(tokens_);
  }

 private:
  size_t FindTagStart(size_t from) const {
    for (size_t i = from; i + 1 < src_.size(); ++i) {
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) {
        return i;
      }
    }
    return src_.size();
  }

  void Advance(size_t to) {
    for (; pos_ < to; ++pos_) {
      if (src_[pos_] == '\n') ++line_;
    }
  }

  void Emit(Token::Type type, std::string text) {
    tokens_.push_back(Token{type, std::move(text), line_});
  }

  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("template syntax error at line ", line_, ": ", std::string(what)));
  }

  // After a tag's end (pos_ just past it): `-` eats all whitespace, a block or comment end eats
  // one newline (trim_blocks) unless marked `+`. Returns whether a newline ended what was eaten.
  bool ConsumeAfterEnd(char marker, bool is_block_or_comment = true) {
    size_t p = pos_;
    if (marker == '-') {
      while (p < src_.size() && IsSpace(src_[p])) ++p;
    } else if (marker != '+' && is_block_or_comment && p < src_.size() && src_[p] == '\n') {
      ++p;
    }
    bool newline = p > pos_ && src_[p - 1] == '\n';
    Advance(p);
    return newline;
  }

  // Lexes expression tokens up to the tag's end ("}}" or "%}"); returns line_starting.
  absl::StatusOr<bool> LexTag(char closer) {
    int depth = 0;  // brackets, so `}}` inside a dict literal does not end the tag early
    while (true) {
      while (pos_ < src_.size() && IsSpace(src_[pos_])) Advance(pos_ + 1);
      if (pos_ >= src_.size()) return Error("unexpected end of template inside a tag");
      char c = src_[pos_];
      auto at = [&](std::string_view s) { return src_.compare(pos_, s.size(), s) == 0; };
      std::string end = closer == '}' ? "}}" : "%}";
      if (depth == 0 || closer == '%') {
        char marker = '\0';
        size_t len = 0;
        if (at("-" + end)) {
          marker = '-';
          len = 3;
        } else if (closer == '%' && at("+" + end)) {
          marker = '+';
          len = 3;
        } else if (at(end)) {
          len = 2;
        }
        if (len > 0) {
          Emit(closer == '}' ? Token::kVarEnd : Token::kBlockEnd, "");
          Advance(pos_ + len);
          return ConsumeAfterEnd(marker, closer == '%');
        }
      }
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t e = pos_;
        while (e < src_.size() &&
               (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_'))
          ++e;
        Emit(Token::kName, src_.substr(pos_, e - pos_));
        Advance(e);
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t e = pos_;
        bool is_float = false;
        auto digits = [&] {
          while (e < src_.size() &&
                 (std::isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_'))
            ++e;
        };
        digits();
        if (e + 1 < src_.size() && src_[e] == '.' &&
            std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
          is_float = true;
          ++e;
          digits();
        }
        if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
          size_t m = e + 1;
          if (m < src_.size() && (src_[m] == '+' || src_[m] == '-')) ++m;
          if (m < src_.size() && std::isdigit(static_cast<unsigned char>(src_[m]))) {
            is_float = true;
            e = m;
            digits();
          }
        }
        std::string text;
        for (size_t i = pos_; i < e; ++i) {
          if (src_[i] != '_') text += src_[i];
        }
        Emit(is_float ? Token::kFloat : Token::kInt, text);
        Advance(e);
      } else if (c == '\'' || c == '"') {
        auto s = LexString(c);
        if (!s.ok()) return s;
      } else {
        static constexpr std::string_view kTwo[] = {"//", "**", "==", "!=", "<=", ">="};
        std::string op;
        for (std::string_view two : kTwo) {
          if (at(two)) op = std::string(two);
        }
        if (op.empty()) {
          if (std::string_view("+-*/%~<>=.,:|()[]{}").find(c) == std::string_view::npos) {
            return Error(absl::StrCat("unexpected char '", std::string(1, c), "'"));
          }
          op = std::string(1, c);
        }
        if (op == "(" || op == "[" || op == "{") ++depth;
        if ((op == ")" || op == "]" || op == "}") && depth > 0) --depth;
        Emit(Token::kOp, op);
        Advance(pos_ + op.size());
      }
    }
  }

  // A Python-style string literal with backslash escapes.
  absl::Status LexString(char quote) {
    int start_line = line_;
    size_t p = pos_ + 1;
    std::string out;
    while (true) {
      if (p >= src_.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("template syntax error at line ", start_line, ": unterminated string"));
      }
      char c = src_[p];
      if (c == quote) break;
      if (c != '\\' || p + 1 >= src_.size()) {
        out += c;
        ++p;
        continue;
      }
      char e = src_[p + 1];
      p += 2;
      switch (e) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case '0':
          out += '\0';
          break;
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'v':
          out += '\v';
          break;
        case '\\':
          out += '\\';
          break;
        case '\'':
          out += '\'';
          break;
        case '"':
          out += '"';
          break;
        case '\n':
          break;
        case 'x':
        case 'u':
        case 'U': {
          size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          uint32_t cp = 0;
          for (size_t i = 0; i < n; ++i) {
            if (p >= src_.size() || !std::isxdigit(static_cast<unsigned char>(src_[p]))) {
              return Error("bad escape in string literal");
            }
            char h = src_[p++];
            cp = cp * 16 + (std::isdigit(static_cast<unsigned char>(h))
                                ? h - '0'
                                : (std::tolower(h) - 'a' + 10));
          }
          if (cp > 0x10FFFF) return Error("bad escape in string literal");
          AppendUtf8(cp, out);
          break;
        }
        default:
          out += '\\';
          out += e;
      }
    }
    tokens_.push_back(Token{Token::kString, std::move(out), start_line});
    Advance(p + 1);
    return absl::OkStatus();
  }

  std::string src_;
  size_t pos_ = 0;
  int line_ = 1;
  std::vector<Token> tokens_;
};

}  // namespace

absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source) {
  return Lexer(Normalize(source)).Run();
}

}  // namespace kvfold::chat
