// Python str semantics over UTF-8 bytes: templates index, slice, measure and strip by code
// point, and Python's strip() removes Unicode whitespace.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kvfold::chat {

// Code points of `s` with their byte offsets; an invalid byte counts as one code point.
struct CodePoints {
  std::vector<uint32_t> cps;
  std::vector<size_t> offsets;  // offsets[i] is where cps[i] starts; offsets.back() == size
};
CodePoints DecodeUtf8(const std::string& s);

size_t CodePointCount(const std::string& s);
bool IsPyWhitespace(uint32_t cp);

// str.strip / lstrip / rstrip; `chars` nullopt means whitespace.
std::string PyStrip(const std::string& s, const std::optional<std::string>& chars, bool left,
                    bool right);
// str.split(sep, maxsplit); sep nullopt splits on whitespace runs.
std::vector<std::string> PySplit(const std::string& s, const std::optional<std::string>& sep,
                                 int64_t maxsplit);
std::string PyReplace(const std::string& s, const std::string& old, const std::string& repl,
                      int64_t count);
// ASCII case mapping (the templates' literals and roles are ASCII).
std::string PyUpper(std::string s);
std::string PyLower(std::string s);
std::string PyCapitalize(const std::string& s);
std::string PyTitle(const std::string& s);

// Resolves Python slice bounds for a sequence of `size`; returns the selected indices.
std::vector<int64_t> SliceIndices(int64_t size, std::optional<int64_t> start,
                                  std::optional<int64_t> stop, int64_t step);

}  // namespace kvfold::chat
