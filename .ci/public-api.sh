#!/usr/bin/env bash
# Updates the public API baselines (PublicAPI.Shipped.txt and PublicAPI.Unshipped.txt beside each library project;
# README, "Public API") to what the code declares now: builds the library assemblies with the analyzers' errors as
# warnings, adds every symbol RS0016 reports as undeclared to PublicAPI.Unshipped.txt, and removes every line RS0017
# reports as no longer public from either file. Review the diff: each line in it is a change to what hosts compile against.
#     .ci/public-api.sh          update the baselines
#     .ci/public-api.sh --check  change nothing; list the differences and exit 1 when a baseline is stale
#     .ci/public-api.sh --ship   at a release: move every line of PublicAPI.Unshipped.txt into PublicAPI.Shipped.txt
set -euo pipefail
cd "$(dirname "$0")/.."
projects=(src/Phi2Native.Core src/Phi2Native.Cuda src/Phi2Native.Backends src/Phi2Native)
check=false
case "${1:-}" in
    --check) check=true ;;
    --ship)
        for project in "${projects[@]}"; do
            { echo '#nullable enable'; cat "$project/PublicAPI.Shipped.txt" "$project/PublicAPI.Unshipped.txt" | grep -vx -e '#nullable enable' -e '' | LC_ALL=C sort -u; } > "$project/PublicAPI.Shipped.txt.new"
            mv "$project/PublicAPI.Shipped.txt.new" "$project/PublicAPI.Shipped.txt"
            echo '#nullable enable' > "$project/PublicAPI.Unshipped.txt"
        done
        echo "every unshipped line is now in PublicAPI.Shipped.txt"
        exit 0 ;;
    "") ;;
    *) echo "usage: .ci/public-api.sh [--check | --ship]" >&2; exit 2 ;;
esac

log=$(mktemp) changes=$(mktemp)
trap 'rm -f "$log" "$changes"' EXIT
# --no-incremental: an assembly that is not compiled reports nothing. src/Phi2Native builds the three below it.
if ! dotnet build src/Phi2Native/Phi2Native.csproj -c Release --no-incremental -p:TreatWarningsAsErrors=false -nologo > "$log" 2>&1; then
    grep -E ' error ' "$log" | sort -u >&2
    echo "error: the build failed for another reason than the API baselines" >&2
    exit 1
fi
# "path(l,c): warning RS0016: Symbol 'NAME' is not part of the declared public API (...) [/abs/project/X.csproj]"
# becomes "RS0016<TAB>/abs/project<TAB>NAME".
grep -oE "warning RS001[67]: Symbol '.*' (is not part|is part) .*\[[^]]*\.csproj\]" "$log" | sort -u |
    sed -E "s/^warning (RS001[67]): Symbol '(.*)' (is not part|is part) .*\[(.*)\/[^/]*\.csproj\]$/\1\t\4\t\2/" > "$changes" || true
if [ ! -s "$changes" ]; then
    echo "public API baselines are up to date"
    exit 0
fi
if $check; then
    awk -F'\t' '{ print ($1 == "RS0016" ? "not in the baseline: " : "in the baseline, no longer public: ") $2 ": " $3 }' "$changes"
    echo "error: the public API differs from its baselines; run .ci/public-api.sh and review the diff" >&2
    exit 1
fi
for project in "${projects[@]}"; do
    folder=$(cd "$project" && pwd)
    for file in "$project/PublicAPI.Shipped.txt" "$project/PublicAPI.Unshipped.txt"; do
        # Drop what RS0017 names; to the unshipped file add what RS0016 names; keep the '#nullable enable' header
        # first and the rest sorted, so a change shows as the lines it adds or removes.
        awk -F'\t' -v folder="$folder" -v add="$([ "$file" = "$project/PublicAPI.Unshipped.txt" ] && echo 1 || echo 0)" '
            FNR == NR { if ($2 == folder && $1 == "RS0017") gone[$3] = 1; if ($2 == folder && $1 == "RS0016" && add) print $3; next }
            $0 != "#nullable enable" && !($0 in gone) { print }' "$changes" "$file" | LC_ALL=C sort -u > "$file.body"
        { echo '#nullable enable'; grep -v '^$' "$file.body" || true; } > "$file"
        rm -f "$file.body"
    done
done
awk -F'\t' '$1 == "RS0016" { added++ } $1 == "RS0017" { removed++ } END { printf "%d added to PublicAPI.Unshipped.txt, %d removed\n", added, removed }' "$changes"
