# Sourced by benches/compare-llamacpp.sh and benches/arm-model/run.sh: llama.cpp's source as the
# llama-cpp-python sdist vendors it, fetched with pip and unpacked once into a cache folder.
#
#   llamacpp_source DIR VERSION PYTHON   ->  sets $llamacpp_src to DIR/llama.cpp-VERSION
#
# Uses the caller's `say` and `die`. The folder also gets `.edgeinfer-llamacpp-commit`, the llama.cpp
# commit that llama-cpp-python's changelog names for VERSION (empty when it names none).

llamacpp_source() {
    local dir=$1 version=$2 python=$3
    llamacpp_src="$dir/llama.cpp-$version"
    [ -f "$llamacpp_src/CMakeLists.txt" ] && return 0
    mkdir -p "$dir/dl"
    local sdist="$dir/dl/llama_cpp_python-$version.tar.gz"
    if [ ! -f "$sdist" ]; then
        say "downloading the llama-cpp-python==$version sdist (about 75 MB) with pip"
        # --no-binary for this package only: its build requirements may come as wheels (pip
        # prepares the sdist's metadata with them), instead of compiling CMake from source.
        "$python" -m pip download --quiet --no-deps --no-binary llama-cpp-python \
            "llama-cpp-python==$version" -d "$dir/dl" || die "pip download failed"
        [ -f "$sdist" ] || die "pip left no $(basename "$sdist") in $dir/dl"
    fi
    say "extracting vendor/llama.cpp from $(basename "$sdist")"
    local top
    top=$(tar -tzf "$sdist" | sed -n '1s,/.*,,p')  # reads it all: no SIGPIPE under pipefail
    rm -rf "$llamacpp_src.partial"
    mkdir -p "$llamacpp_src.partial"
    tar -xzf "$sdist" -C "$llamacpp_src.partial" --strip-components=3 "$top/vendor/llama.cpp"
    # The submodule's .git file points into a repository the sdist does not have.
    rm -f "$llamacpp_src.partial/.git"
    # llama-cpp-python's changelog names the llama.cpp commit it vendors.
    tar -xzOf "$sdist" "$top/CHANGELOG.md" 2>/dev/null \
        | awk -v v="## [$version]" 'index($0, v) == 1 {on = 1; next} on && /^## \[/ {exit}
              on && match($0, /llama\.cpp@[0-9a-f]+/) {print substr($0, RSTART + 10, RLENGTH - 10); exit}' \
        > "$llamacpp_src.partial/.edgeinfer-llamacpp-commit" || true
    rm -rf "$llamacpp_src"
    mv "$llamacpp_src.partial" "$llamacpp_src"
}
