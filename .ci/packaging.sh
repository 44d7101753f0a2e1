#!/usr/bin/env bash
# Packaging check: packs every package into a temporary local feed and uses them as a user would, outside the
# repository, so that packaging can never silently break:
#   1. dotnet pack SharpTune.Core, SharpTune.Recipes, SharpTune (CPU natives), SharpTune.Cuda, SharpTune.Cli (tool)
#   2. dotnet tool install --tool-path <tmp> SharpTune.Cli; then, from another folder: sharptune --version, ls,
#      convert llama2c (stories260K from ../shared/data) and run generate
#   3. an empty folder: dotnet new console, dotnet add package SharpTune, ~10 lines that load the converted
#      stories260K and print a greedy story, compared with llama2.c's documented sample (no csproj edits)
#   4. the samples (samples/Generate, samples/Distil) built from the feed and run
# Steps that need stories260K are skipped with a message when ../shared/data is absent.
# Restores are offline when the NuGet cache already holds TorchSharp and libtorch (it does after the main build).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
start=$SECONDS
step() { echo "packaging: [$((SECONDS - start))s] $*"; }

work="$(mktemp -d "${TMPDIR:-/tmp}/sharptune-packaging.XXXXXX")"
trap 'rm -rf "$work"' EXIT
feed="$work/feed"
mkdir -p "$feed"
version="$(dotnet msbuild "$root/src/SharpTune/SharpTune.csproj" -getProperty:Version -nologo)"
shared="${SHARPTUNE_SHARED_DATA:-$root/../shared/data}"
stories="$shared/models/stories260K"
have_stories=false
if [[ -f "$stories/stories260K.bin" && -f "$stories/tok512.model" && -f "$stories/EXPECTED_greedy.txt" ]]; then have_stories=true; fi

step "packing $version into $feed"
pack() { dotnet pack "$@" -c Release -o "$feed" -nologo -v quiet -clp:ErrorsOnly\;NoSummary; }
pack "$root/src/SharpTune/SharpTune.csproj"
pack "$root/src/SharpTune.Recipes/SharpTune.Recipes.csproj"
pack "$root/packaging/NativesMetaPackage.csproj" -p:SharpTuneNatives=cpu
pack "$root/packaging/NativesMetaPackage.csproj" -p:SharpTuneNatives=cuda
pack "$root/src/SharpTune.Cli/SharpTune.Cli.csproj"
ls -l "$feed"
for id in SharpTune SharpTune.Core SharpTune.Recipes SharpTune.Cuda SharpTune.Cli; do
  nupkg="$feed/$id.$version.nupkg"
  [[ -f "$nupkg" ]] || { echo "packaging: missing $nupkg" >&2; exit 1; }
  nuspec="$(unzip -p "$nupkg" "$id.nuspec")"
  for field in "<license type=\"expression\">MIT</license>" "<readme>README.md</readme>" "<version>$version</version>" "<authors>SharpTune contributors</authors>"; do
    grep -qF "$field" <<<"$nuspec" || { echo "packaging: $id's nuspec lacks $field" >&2; exit 1; }
  done
  files="$(unzip -Z1 "$nupkg")" # (a variable, not a pipe: grep -q closing early would fail the pipe)
  grep -qx "LICENSE" <<<"$files" && grep -qx "THIRD-PARTY-NOTICES.md" <<<"$files" \
    || { echo "packaging: $id lacks LICENSE or THIRD-PARTY-NOTICES.md" >&2; exit 1; }
done
grep -qx "buildTransitive/SharpTune.Core.targets" <<<"$(unzip -Z1 "$feed/SharpTune.Core.$version.nupkg")" \
  || { echo "packaging: SharpTune.Core lacks its buildTransitive targets" >&2; exit 1; }

# The packages are local builds that NuGet would otherwise take from its cache if an older pack of the same version
# was restored before: remove only those (this repository's own package ids at this version).
cache="$(dotnet nuget locals global-packages --list | sed 's/^global-packages: //')"
for id in sharptune sharptune.core sharptune.recipes sharptune.cuda sharptune.cli; do rm -rf "${cache:?}/$id/$version"; done

# A NuGet.config for the consumer folders: SharpTune packages only from the feed, everything else from nuget.org
# (not contacted when the cache holds the versions).
mkdir -p "$work/config"
cat > "$work/config/NuGet.Config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <clear />
    <add key="sharptune-local" value="$feed" />
    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
  </packageSources>
  <packageSourceMapping>
    <packageSource key="sharptune-local"><package pattern="SharpTune" /><package pattern="SharpTune.*" /></packageSource>
    <packageSource key="nuget.org"><package pattern="*" /></packageSource>
  </packageSourceMapping>
</configuration>
XML

step "dotnet tool install SharpTune.Cli"
# (--add-source cannot be combined with the source mapping above, which lives in a folder of its own)
mkdir -p "$work/install"
(cd "$work/install" && dotnet tool install --tool-path "$work/tools" SharpTune.Cli --version "$version" --add-source "$feed")
mkdir -p "$work/elsewhere"
cd "$work/elsewhere"
"$work/tools/sharptune" --version | tee "$work/version.txt"
grep -q "^sharptune $version" "$work/version.txt" && grep -q "^natives: cpu" "$work/version.txt" \
  || { echo "packaging: unexpected --version output" >&2; exit 1; }
"$work/tools/sharptune" ls > "$work/ls.txt"
head -n 12 "$work/ls.txt"
grep -q "knowledge_distillation_single_device" "$work/ls.txt" && grep -q "tiny/kd_lora_single_device" "$work/ls.txt" \
  || { echo "packaging: sharptune ls lists no recipes or configs" >&2; exit 1; }
expected=""
if $have_stories; then
  step "sharptune convert llama2c + run generate (installed tool)"
  "$work/tools/sharptune" convert llama2c "$stories/stories260K.bin" "$stories/tok512.model" "$work/stories260K"
  "$work/tools/sharptune" run generate --config generation checkpoint_dir="$work/stories260K" max_new_tokens=32 threads=2 \
    | tee "$work/generate.txt"
  grep -q "^32 tokens in" "$work/generate.txt" || { echo "packaging: sharptune run generate printed no speed line" >&2; exit 1; }
  expected="$(cat "$stories/EXPECTED_greedy.txt")"
else
  echo "packaging: SKIPPED the stories260K steps: $stories not found (../shared/data beside the repository)"
fi

step "empty folder: dotnet new console + dotnet add package SharpTune"
mkdir -p "$work/consumer"
cd "$work/consumer"
cp "$work/config/NuGet.Config" .   # the feed, as a user who packed locally would have it
dotnet new console --name Consumer --output . >/dev/null
dotnet add package SharpTune --version "$version" >/dev/null
cat > Program.cs <<'CS'
using SharpTune;
using SharpTune.Eval;

if (args.Length == 0) { Console.WriteLine(TorchSharp.torch.ones(2).sum().item<float>()); return; }
using var lm = Pretrained.Load(args[0]);
Console.WriteLine(lm.Generate("", new GenerationOptions { MaxNewTokens = 256 }));
CS
if [[ "$(grep -c . Consumer.csproj)" -gt 12 ]]; then echo "packaging: Consumer.csproj grew:" >&2; cat Consumer.csproj >&2; exit 1; fi
dotnet build -c Release -nologo -v quiet -clp:ErrorsOnly\;NoSummary
[[ "$(dotnet run -c Release --no-build)" == "2" ]] || { echo "packaging: a tensor op failed in the consumer" >&2; exit 1; }
if $have_stories; then
  dotnet run -c Release --no-build -- "$work/stories260K" > "$work/story.txt"
  cat "$work/story.txt"
  [[ "$(cat "$work/story.txt")" == "$expected" ]] || { echo "packaging: the consumer's greedy story is not llama2.c's documented sample" >&2; exit 1; }
fi

step "samples from the feed"
for sample in Generate Distil; do
  dotnet build "$root/samples/$sample" -c Release --configfile "$work/config/NuGet.Config" -nologo -v quiet -clp:ErrorsOnly\;NoSummary \
    -p:BaseOutputPath="$work/samples/$sample/bin/" -p:BaseIntermediateOutputPath="$work/samples/$sample/obj/"
done
if $have_stories; then
  dotnet "$work/samples/Generate/bin/Release/net10.0/Generate.dll" "$work/stories260K" "Once upon a time" 24
fi
dotnet "$work/samples/Distil/bin/Release/net10.0/Distil.dll" "$work/distil" | tee "$work/distil.txt"
grep -q "student written to $work/distil/student/epoch_0" "$work/distil.txt" || { echo "packaging: the distil sample wrote no student" >&2; exit 1; }
step "packaging check passed"
