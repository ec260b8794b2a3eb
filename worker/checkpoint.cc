#include "worker/checkpoint.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <map>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "glog/logging.h"
#include "nlohmann/json.hpp"
#include "worker/status_macros.h"

namespace kvfold {
namespace {

using Json = nlohmann::json;

// Debian's Abseil predates absl::string_view aliasing std::string_view; convert at the seams.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return absl::ErrnoToStatus(errno, absl::StrCat("cannot read ", path));
  std::string text;
  char buffer[1 << 16];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof(buffer), f)) > 0) text.append(buffer, n);
  const bool failed = std::ferror(f) != 0;
  const int error = errno;
  std::fclose(f);
  if (failed) return absl::ErrnoToStatus(error, absl::StrCat("cannot read ", path));
  return text;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// The index's weight_map grouped by shard file name: shard -> tensors it should hold.
absl::StatusOr<std::map<std::string, std::vector<std::string>>> ReadIndex(
    const std::string& index_path) {
  absl::StatusOr<std::string> text = ReadFile(index_path);
  if (!text.ok()) return text.status();
  Json index;
  try {
    index = Json::parse(*text);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": not valid JSON: ", absl::string_view(e.what()).substr(0, 256)));
  }
  auto weight_map = index.is_object() ? index.find("weight_map") : index.end();
  if (!index.is_object() || weight_map == index.end() || !weight_map->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": expected an object with a 'weight_map' object"));
  }
  std::map<std::string, std::vector<std::string>> shards;
  for (const auto& [tensor, shard] : weight_map->items()) {
    if (!shard.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map entry for tensor ",
                                                     tensor, " must be a string, got ",
                                                     shard.type_name()));
    }
    // Shards sit beside the index; a path out of the folder is a broken or hostile index.
    const std::filesystem::path file(shard.get<std::string>());
    const bool escapes = file.empty() || file.is_absolute() ||
                         std::find(file.begin(), file.end(), "..") != file.end();
    if (escapes) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": shard '", file.string(),
                                                     "' for tensor ", tensor,
                                                     " is not a file name inside the folder"));
    }
    shards[file.string()].push_back(tensor);
  }
  if (shards.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map lists no tensors"));
  }
  return shards;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  auto checkpoint = absl::WrapUnique(new Checkpoint());
  checkpoint->dir_ = dir;
  KVFOLD_RETURN_IF_ERROR(checkpoint->LoadConfig());
  const std::string index_path = absl::StrCat(dir, "/model.safetensors.index.json");
  const std::string single_path = absl::StrCat(dir, "/model.safetensors");
  // Like transformers: a single file wins over an index beside it.
  std::error_code ec;
  if (std::filesystem::exists(single_path, ec)) {
    KVFOLD_RETURN_IF_ERROR(checkpoint->LoadSingleFile(single_path));
  } else if (std::filesystem::exists(index_path, ec)) {
    KVFOLD_RETURN_IF_ERROR(checkpoint->LoadShards(index_path));
  } else {
    return absl::NotFoundError(
        absl::StrCat(dir, ": no model.safetensors or model.safetensors.index.json in the folder"));
  }
  VLOG(1) << "Opened checkpoint " << dir << ": " << checkpoint->config_.architecture << ", "
          << checkpoint->tensors_.size() << " tensors in " << checkpoint->files_.size() << " files";
  return checkpoint;
}

absl::Status Checkpoint::LoadConfig() {
  const std::string config_path = absl::StrCat(dir_, "/config.json");
  absl::StatusOr<std::string> text = ReadFile(config_path);
  if (!text.ok()) return text.status();
  absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(*text, config_path);
  if (!config.ok()) return config.status();
  config_ = *std::move(config);
  // generation_config.json is optional; its EOS list is what generation should stop on.
  const std::string generation_path = absl::StrCat(dir_, "/generation_config.json");
  std::error_code ec;
  if (!std::filesystem::exists(generation_path, ec)) return absl::OkStatus();
  absl::StatusOr<std::string> generation = ReadFile(generation_path);
  if (!generation.ok()) return generation.status();
  return config_.ApplyGenerationConfig(*generation, generation_path);
}

absl::Status Checkpoint::LoadSingleFile(const std::string& path) {
  absl::StatusOr<const SafetensorsFile*> file = OpenShard(path);
  return file.ok() ? absl::OkStatus() : file.status();
}

absl::Status Checkpoint::LoadShards(const std::string& index_path) {
  absl::StatusOr<std::map<std::string, std::vector<std::string>>> shards = ReadIndex(index_path);
  if (!shards.ok()) return shards.status();
  for (const auto& [shard, names] : *shards) {
    absl::StatusOr<const SafetensorsFile*> file = OpenShard(absl::StrCat(dir_, "/", shard));
    if (!file.ok()) {
      return absl::Status(
          file.status().code(),
          absl::StrCat(file.status().message(), " (a shard listed in ", index_path, ")"));
    }
    for (const std::string& name : names) {
      if ((*file)->Find(name) == nullptr) {
        return absl::NotFoundError(absl::StrCat("tensor ", Sv(name), " is listed in ", index_path,
                                                " but missing from its shard ", (*file)->path()));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<const SafetensorsFile*> Checkpoint::OpenShard(const std::string& path) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  files_.push_back(*std::move(file));
  const SafetensorsFile& opened = *files_.back();
  KVFOLD_RETURN_IF_ERROR(AddTensors(opened));
  return &opened;
}

absl::Status Checkpoint::AddTensors(const SafetensorsFile& file) {
  for (const SafetensorsTensor& tensor : file.tensors()) {
    auto [it, inserted] = tensors_.try_emplace(tensor.name, Entry{&tensor, &file});
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", tensor.name, " appears in both ",
                                                     it->second.file->path(), " and ",
                                                     file.path()));
    }
  }
  return absl::OkStatus();
}

bool Checkpoint::Has(std::string_view name) const { return tensors_.contains(Sv(name)); }

absl::StatusOr<TensorView> Checkpoint::Get(std::string_view name, int64_t rows,
                                           int64_t cols) const {
  auto it = tensors_.find(Sv(name));
  if (it == tensors_.end()) {
    return absl::NotFoundError(
        absl::StrCat("tensor ", Sv(name), " not found in checkpoint ", dir_));
  }
  const SafetensorsTensor& tensor = *it->second.tensor;
  const std::string& path = it->second.file->path();
  const std::vector<int64_t>& shape = tensor.shape;
  if (shape.size() != 1 && shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", Sv(name), " in ", path, " has shape ",
                                                   ShapeString(shape), " (rank ", shape.size(),
                                                   "), expected a 1-D or 2-D tensor"));
  }
  const int64_t actual_rows = shape.size() == 1 ? 1 : shape[0];
  const int64_t actual_cols = shape.back();
  if (actual_rows != rows || actual_cols != cols) {
    const std::vector<int64_t> expected =
        shape.size() == 1 && rows == 1 ? std::vector<int64_t>{cols} : std::vector{rows, cols};
    return absl::InvalidArgumentError(absl::StrCat("tensor ", Sv(name), " in ", path, " has shape ",
                                                   ShapeString(shape), ", expected ",
                                                   ShapeString(expected)));
  }
  // The mapping is read-only; TensorView is shared with activations and so non-const.
  return TensorView{const_cast<void*>(tensor.data), tensor.dtype, rows, cols};
}

}  // namespace kvfold
