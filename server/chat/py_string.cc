#include "server/chat/py_string.h"

#include <algorithm>
#include <cctype>

namespace kvfold::chat {

CodePoints DecodeUtf8(const std::string& s) {
  CodePoints out;
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = s[i];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool ok = len > 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(s[i + k]) >> 6) == 2;
    uint32_t cp = c;
    if (ok && len > 1) {
      cp = c & (0x7F >> len);
      for (size_t k = 1; k < len; ++k)
        cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    }
    if (!ok) len = 1;
    out.cps.push_back(cp);
    out.offsets.push_back(i);
    i += len;
  }
  out.offsets.push_back(s.size());
  return out;
}

size_t CodePointCount(const std::string& s) { return DecodeUtf8(s).cps.size(); }

bool IsPyWhitespace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

std::string PyStrip(const std::string& s, const std::optional<std::string>& chars, bool left,
                    bool right) {
  CodePoints cp = DecodeUtf8(s);
  std::vector<uint32_t> set;
  if (chars) set = DecodeUtf8(*chars).cps;
  auto strip = [&](uint32_t c) {
    return chars ? std::find(set.begin(), set.end(), c) != set.end() : IsPyWhitespace(c);
  };
  size_t b = 0, e = cp.cps.size();
  if (left) {
    while (b < e && strip(cp.cps[b])) ++b;
  }
  if (right) {
    while (e > b && strip(cp.cps[e - 1])) --e;
  }
  return s.substr(cp.offsets[b], cp.offsets[e] - cp.offsets[b]);
}

std::vector<std::string> PySplit(const std::string& s, const std::optional<std::string>& sep,
                                 int64_t maxsplit) {
  std::vector<std::string> parts;
  if (sep) {
    size_t pos = 0;
    while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
      size_t hit = s.find(*sep, pos);
      if (hit == std::string::npos) break;
      parts.push_back(s.substr(pos, hit - pos));
      pos = hit + sep->size();
    }
    parts.push_back(s.substr(pos));
    return parts;
  }
  CodePoints cp = DecodeUtf8(s);
  size_t i = 0, n = cp.cps.size();
  while (true) {
    while (i < n && IsPyWhitespace(cp.cps[i])) ++i;
    if (i == n) break;
    if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
      size_t e = n;
      while (e > i && IsPyWhitespace(cp.cps[e - 1])) --e;
      parts.push_back(s.substr(cp.offsets[i], cp.offsets[e] - cp.offsets[i]));
      break;
    }
    size_t j = i;
    while (j < n && !IsPyWhitespace(cp.cps[j])) ++j;
    parts.push_back(s.substr(cp.offsets[i], cp.offsets[j] - cp.offsets[i]));
    i = j;
  }
  return parts;
}

std::string PyReplace(const std::string& s, const std::string& old, const std::string& repl,
                      int64_t count) {
  std::string out;
  if (old.empty()) {  // Python inserts `repl` around every code point
    CodePoints cp = DecodeUtf8(s);
    int64_t done = 0;
    for (size_t i = 0; i <= cp.cps.size(); ++i) {
      if (count < 0 || done < count) {
        out += repl;
        ++done;
      }
      if (i < cp.cps.size()) out += s.substr(cp.offsets[i], cp.offsets[i + 1] - cp.offsets[i]);
    }
    return out;
  }
  size_t pos = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t hit = s.find(old, pos);
    if (hit == std::string::npos) break;
    out += s.substr(pos, hit - pos) + repl;
    pos = hit + old.size();
    ++done;
  }
  return out + s.substr(pos);
}

std::string PyUpper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string PyLower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string PyCapitalize(const std::string& s) {
  std::string out = PyLower(s);
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

std::string PyTitle(const std::string& s) {
  std::string out = s;
  bool prev_cased = false;
  for (char& c : out) {
    unsigned char u = static_cast<unsigned char>(c);
    if (std::isalpha(u)) {
      c = static_cast<char>(prev_cased ? std::tolower(u) : std::toupper(u));
      prev_cased = true;
    } else {
      prev_cased = u >= 0x80 && prev_cased;
    }
  }
  return out;
}

std::vector<int64_t> SliceIndices(int64_t size, std::optional<int64_t> start,
                                  std::optional<int64_t> stop, int64_t step) {
  std::vector<int64_t> out;
  auto clamp = [&](std::optional<int64_t> v, int64_t dflt, int64_t lo, int64_t hi) {
    if (!v) return dflt;
    int64_t x = *v < 0 ? *v + size : *v;
    return std::clamp(x, lo, hi);
  };
  if (step > 0) {
    int64_t b = clamp(start, 0, 0, size), e = clamp(stop, size, 0, size);
    for (int64_t i = b; i < e; i += step) out.push_back(i);
  } else {
    int64_t b = clamp(start, size - 1, -1, size - 1), e = clamp(stop, -1, -1, size - 1);
    for (int64_t i = b; i > e; i += step) out.push_back(i);
  }
  return out;
}

}  // namespace kvfold::chat
