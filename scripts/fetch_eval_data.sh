#!/usr/bin/env bash
# Fetches the English prose that `kvfold eval` and `kvfold calibrate` use for real models: Jane
# Austen's six novels (public domain; Project Gutenberg's texts as packaged by Julia Silge's
# janeaustenr, MIT) from Debian's r-cran-janeaustenr package (1.6 MB). Needs neither R nor pip:
# scripts/rdata_text.py reads the package's data files.
#
# Writes, under ${KVFOLD_CACHE_DIR:-~/.cache/kvfold}/data/:
#   austen.txt              all six novels in publication order, one paragraph per line-pair
#   austen_calibration.txt  the first 80 % of the paragraphs (what calibration may look at)
#   austen_heldout.txt      the last 20 % (disjoint; held-out perplexity)
# Paragraphs are the books' hard-wrapped lines joined with single spaces, separated by a blank
# line. Idempotent: does nothing when the three files are there.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${KVFOLD_CACHE_DIR:-${HOME}/.cache/kvfold}"
out="${cache}/data"
package="r-cran-janeaustenr"
novels=(sensesensibility prideprejudice mansfieldpark emma northangerabbey persuasion)

if [ -s "${out}/austen_calibration.txt" ] && [ -s "${out}/austen_heldout.txt" ] &&
  [ -s "${out}/austen.txt" ]; then
  echo "fetch_eval_data: ${out}/austen_{calibration,heldout}.txt present"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
chmod 755 "${work}"  # apt-get download drops to the _apt user when it can write here
echo "fetch_eval_data: downloading Debian's ${package}"
if ! (cd "${work}" && apt-get download -qq "${package}" 2>/dev/null); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  (cd "${work}" && apt-get download -qq "${package}")
fi
dpkg-deb -x "${work}"/${package}_*.deb "${work}/root"
python3 "${here}/rdata_text.py" "${work}/root/usr/lib/R/site-library/janeaustenr/data" \
  "${novels[@]}" >"${work}/lines.txt"

mkdir -p "${out}"
python3 - "${work}/lines.txt" "${out}" <<'PY'
import os, re, sys
source, out = sys.argv[1], sys.argv[2]
paragraphs, current = [], []
for line in open(source, encoding="utf-8"):
    line = line.strip()
    if line:
        current.append(line)
    elif current:
        paragraphs.append(re.sub(r"\s+", " ", " ".join(current)))
        current = []
if current:
    paragraphs.append(re.sub(r"\s+", " ", " ".join(current)))
split = len(paragraphs) * 8 // 10
parts = {"austen.txt": paragraphs, "austen_calibration.txt": paragraphs[:split],
         "austen_heldout.txt": paragraphs[split:]}
for name, part in parts.items():
    path = os.path.join(out, name)
    with open(path + ".part", "w", encoding="utf-8") as f:
        f.write("\n\n".join(part) + "\n")
    os.replace(path + ".part", path)
    print(f"fetch_eval_data: wrote {path} ({len(part)} paragraphs, "
          f"{os.path.getsize(path)} bytes)")
PY
