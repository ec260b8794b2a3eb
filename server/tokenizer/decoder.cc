#include "server/tokenizer/decoder.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "server/tokenizer/byte_level.h"
#include "server/tokenizer/normalizer.h"
#include "server/tokenizer/pre_tokenizer.h"
#include "server/tokenizer/utf8.h"

namespace kvfold::tokenizer_impl {
namespace {

constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";  // U+FFFD

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::string pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) absl::StrReplaceAll({{pattern_, content_}}, &token);
  }

 private:
  std::string pattern_;
  std::string content_;
};

// Runs of <0xNN> pieces become their UTF-8 text; a run that is not valid UTF-8 becomes one U+FFFD
// per byte (HF's rule, unlike lossy decoding).
class ByteFallbackDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens->size());
    std::string run;
    auto flush = [&] {
      if (run.empty()) return;
      if (IsValidUtf8(run)) {
        out.push_back(run);
      } else {
        for (size_t i = 0; i < run.size(); ++i) out.emplace_back(kReplacementCharacter);
      }
      run.clear();
    };
    for (std::string& token : *tokens) {
      if (std::optional<unsigned char> byte = BytePieceValue(token)) {
        run.push_back(static_cast<char>(*byte));
        continue;
      }
      flush();
      out.push_back(std::move(token));
    }
    flush();
    *tokens = std::move(out);
  }
  bool DecodesWithNext(std::string_view token) const override {
    return BytePieceValue(token).has_value();
  }
};

class ByteLevelDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string bytes;
    for (const std::string& token : *tokens) {
      if (std::optional<std::string> raw = ByteLevelToBytes(token)) {
        bytes += *raw;
      } else {
        bytes += token;
      }
    }
    std::string text;
    text.reserve(bytes.size());
    AppendUtf8Lossy(bytes, &text);
    tokens->assign(1, std::move(text));
  }
  bool DecodesWithNext(std::string_view token) const override {
    std::optional<std::string> raw = ByteLevelToBytes(token);
    return raw.has_value() && !IsValidUtf8(*raw);
  }
};

class FuseDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string fused = absl::StrJoin(*tokens, "");
    tokens->assign(1, std::move(fused));
  }
};

// Removes up to `start` leading and `stop` trailing copies of `content` (one character).
class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) {
      std::string_view view = token;
      for (size_t i = 0; i < start_ && view.starts_with(content_); ++i) {
        view.remove_prefix(content_.size());
      }
      for (size_t i = 0; i < stop_ && view.ends_with(content_); ++i) {
        view.remove_suffix(content_.size());
      }
      token = std::string(view);
    }
  }

 private:
  std::string content_;
  size_t start_;
  size_t stop_;
};

// Replacement characters become spaces, except in the first token (unless the scheme is
// "never"), where they are dropped: HF's Metaspace decoder.
class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, PrependScheme scheme)
      : replacement_(std::move(replacement)), scheme_(scheme) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      const bool drop = i == 0 && scheme_ != PrependScheme::kNever;
      absl::StrReplaceAll({{replacement_, drop ? "" : " "}}, &(*tokens)[i]);
    }
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (const auto& step : steps_) step->DecodeChain(tokens);
  }
  bool DecodesWithNext(std::string_view token) const override {
    for (const auto& step : steps_) {
      if (step->DecodesWithNext(token)) return true;
    }
    return false;
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

absl::StatusOr<std::unique_ptr<Decoder>> MakeSequence(const Json& config) {
  return MakeSequenceOf<SequenceDecoder>(config, "decoder", "decoders", &MakeDecoder);
}

absl::StatusOr<std::unique_ptr<Decoder>> MakeReplace(const Json& config) {
  absl::StatusOr<std::string> pattern = ReplacePatternString(config, "decoder Replace");
  if (!pattern.ok()) return pattern.status();
  absl::StatusOr<std::string> content = GetString(config, "content", "decoder Replace");
  if (!content.ok()) return content.status();
  return std::make_unique<ReplaceDecoder>(*std::move(pattern), *std::move(content));
}

absl::StatusOr<std::unique_ptr<Decoder>> MakeStrip(const Json& config) {
  constexpr std::string_view kWhere = "decoder Strip";
  absl::StatusOr<std::string> content = GetSingleCharacter(config, "content", kWhere);
  if (!content.ok()) return content.status();
  absl::StatusOr<int64_t> start = GetInt(config, "start", 0, 0, 1 << 20, kWhere);
  if (!start.ok()) return start.status();
  absl::StatusOr<int64_t> stop = GetInt(config, "stop", 0, 0, 1 << 20, kWhere);
  if (!stop.ok()) return stop.status();
  return std::make_unique<StripDecoder>(*std::move(content), *start, *stop);
}

absl::StatusOr<std::unique_ptr<Decoder>> MakeMetaspace(const Json& config) {
  constexpr std::string_view kWhere = "decoder Metaspace";
  absl::StatusOr<std::string> replacement = GetSingleCharacter(config, "replacement", kWhere);
  if (!replacement.ok()) return replacement.status();
  absl::StatusOr<PrependScheme> scheme = ReadPrependScheme(config, kWhere);
  if (!scheme.ok()) return scheme.status();
  return std::make_unique<MetaspaceDecoder>(*std::move(replacement), *scheme);
}

}  // namespace

std::unique_ptr<Decoder> MakeByteLevelDecoder() { return std::make_unique<ByteLevelDecoder>(); }

std::optional<unsigned char> BytePieceValue(std::string_view token) {
  if (token.size() != 6 || !token.starts_with("<0x") || token.back() != '>') return std::nullopt;
  // Rust's u8::from_str_radix, which HF uses here, also accepts a leading '+'.
  const int high = token[3] == '+' ? 0 : HexDigit(token[3]);
  const int low = HexDigit(token[4]);
  if (high < 0 || low < 0) return std::nullopt;
  return static_cast<unsigned char>(high * 16 + low);
}

absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const Json& config) {
  absl::StatusOr<std::string> type = ComponentType(config, "decoder");
  if (!type.ok()) return type.status();
  if (*type == "Sequence") return MakeSequence(config);
  if (*type == "Replace") return MakeReplace(config);
  if (*type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (*type == "Fuse") return std::make_unique<FuseDecoder>();
  if (*type == "Strip") return MakeStrip(config);
  if (*type == "Metaspace") return MakeMetaspace(config);
  if (*type == "ByteLevel") return MakeByteLevelDecoder();
  return absl::UnimplementedError(
      absl::StrFormat("tokenizer.json decoder \"%s\" is not supported yet", *type));
}

}  // namespace kvfold::tokenizer_impl
