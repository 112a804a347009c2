"""The runtime catalogue: the images sandboxes run in, and one entry per language and version.

Declarative and free of Django: ``executions.runtime_images`` builds the images from it and
``executions.services.runtimes`` seeds and self-tests the ``Runtime`` rows it describes.

An ``Image`` is a Debian 12 root filesystem: the ``base`` image (debootstrap's minbase) plus
the packages of each image on the path to it (its ``parent`` chain), one layer each, so
runtimes that share a toolchain share its layers (C, C++, Fortran, Ada and D all sit on the
``gcc`` layer; Kotlin, Scala, Clojure and Groovy on ``java``). An ``Entry`` is what evaluators
pick: a language at a version, with its file name, compile and run commands, limits, editor
mode, a hello-world and a self-test program. Several entries can share one image (C++17 and
C++20 both use ``gcc``).

Every self-test program reads two integers, one per line, from stdin and prints their sum:
``SELF_TEST_STDIN`` in, ``SELF_TEST_STDOUT`` out. Every hello-world prints ``HELLO_STDOUT``.
Tier 1 is built and self-tested on every CI run; the other tiers by ``make runtimes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEBIAN_SUITE = "bookworm"
SELF_TEST_STDIN = "20\n22\n"
SELF_TEST_STDOUT = "42"
HELLO_STDOUT = "Hello, world!"


@dataclass(frozen=True)
class Image:
    """One layer of packages on its parent's; ``tag`` is its name on the Docker engine."""

    name: str
    tag: str
    packages: tuple[str, ...]
    parent: str | None = "base"
    # Set in the image's config; the sandbox's own variables (PATH, HOME, LANG) win.
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Limits:
    """An entry's defaults and caps; compile limits apply only to entries that compile."""

    time_limit_ms: int = 5_000
    max_time_limit_ms: int = 10_000
    memory_mb: int = 256
    max_memory_mb: int = 512
    compile_time_limit_ms: int = 15_000
    compile_memory_mb: int = 512
    pids: int = 64
    open_files: int = 64


@dataclass(frozen=True)
class Entry:
    """One runtime evaluators pick: a language at a version."""

    name: str
    language: str
    version: str
    image: str
    file_name: str
    command: tuple[str, ...]
    hello: str
    self_test: str
    editor_mode: str
    compile_command: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    tier: int = 2

    @property
    def display_name(self) -> str:
        if self.version.startswith(self.language + " "):
            return self.version
        return f"{self.language} ({self.version})"


# The JVM sizes its heap from the sandbox's memory limit and starts a thread per core and
# collector: the serial collector and no perf-data file keep it small and out of scratch.
_JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:-UsePerfData", "-XX:TieredStopAtLevel=1", "-Xss64m")
_JVM_LIMITS = Limits(
    time_limit_ms=8_000,
    max_time_limit_ms=20_000,
    memory_mb=512,
    max_memory_mb=1024,
    compile_time_limit_ms=60_000,
    compile_memory_mb=1024,
    pids=128,
)
_HEAVY_COMPILE = Limits(compile_time_limit_ms=60_000, compile_memory_mb=1024, pids=128)

IMAGES: dict[str, Image] = {
    image.name: image
    for image in (
        Image("base", f"evalplatform/base:{DEBIAN_SUITE}", (), parent=None),
        Image(
            "python",
            "evalplatform/python:3.11",
            # python3-minimal alone lacks much of the standard library (ctypes, decimal,
            # email, ...) that submissions expect; libpython3.11-stdlib completes it.
            ("python3-minimal", "libpython3.11-stdlib"),
            env=(("PYTHONDONTWRITEBYTECODE", "1"), ("PYTHONUNBUFFERED", "1")),
        ),
        Image("gcc", "evalplatform/gcc:12", ("gcc", "g++", "libc6-dev")),
        Image("clang", "evalplatform/clang:14", ("clang",), parent="gcc"),
        Image("fortran", "evalplatform/gfortran:12", ("gfortran",), parent="gcc"),
        Image("ada", "evalplatform/gnat:12", ("gnat",), parent="gcc"),
        Image("d", "evalplatform/gdc:12", ("gdc",), parent="gcc"),
        Image("objc", "evalplatform/gobjc:12", ("gobjc",), parent="gcc"),
        Image("nasm", "evalplatform/nasm:2.16", ("nasm",), parent="gcc"),
        Image(
            "go",
            "evalplatform/go:1.19",
            ("golang-go",),
            parent="gcc",
            # The build cache lives in scratch; no cgo, no module download.
            env=(
                ("GOCACHE", "/tmp/go-cache"),
                ("GOPATH", "/tmp/go"),
                ("CGO_ENABLED", "0"),
                ("GO111MODULE", "off"),
                ("GOTOOLCHAIN", "local"),
            ),
        ),
        Image("rust", "evalplatform/rust:1.63", ("rustc",), parent="gcc"),
        Image("haskell", "evalplatform/ghc:9.0", ("ghc",), parent="gcc"),
        Image("ocaml", "evalplatform/ocaml:4.13", ("ocaml-nox",), parent="gcc"),
        Image("pascal", "evalplatform/fpc:3.2", ("fp-compiler",), parent="gcc"),
        Image("cobol", "evalplatform/gnucobol:3.1", ("gnucobol3",), parent="gcc"),
        Image("nim", "evalplatform/nim:1.6", ("nim",), parent="gcc"),
        Image(
            "crystal",
            "evalplatform/crystal:1.6",
            ("crystal", "libgc-dev", "libpcre3-dev", "libevent-dev", "libssl-dev", "zlib1g-dev"),
            parent="gcc",
            env=(("CRYSTAL_CACHE_DIR", "/tmp/crystal-cache"),),
        ),
        Image("vala", "evalplatform/vala:0.56", ("valac", "libglib2.0-dev"), parent="gcc"),
        Image("chicken", "evalplatform/chicken:5.3", ("chicken-bin",), parent="gcc"),
        # default-jre-headless: the /usr/lib/jvm/default-java that launchers such as
        # groovy's look for.
        Image("java", "evalplatform/java:17", ("openjdk-17-jdk-headless", "default-jre-headless")),
        Image("kotlin", "evalplatform/kotlin:1.3", ("kotlin",), parent="java"),
        Image("scala", "evalplatform/scala:2.11", ("scala",), parent="java"),
        Image("clojure", "evalplatform/clojure:1.11", ("clojure",), parent="java"),
        Image("groovy", "evalplatform/groovy:2.4", ("groovy",), parent="java"),
        Image("node", "evalplatform/node:18", ("nodejs",)),
        Image("typescript", "evalplatform/typescript:4.8", ("node-typescript",), parent="node"),
        Image("coffeescript", "evalplatform/coffeescript:2.7", ("coffeescript",), parent="node"),
        Image("pypy", "evalplatform/pypy:3.9", ("pypy3",)),
        Image("ruby", "evalplatform/ruby:3.1", ("ruby",)),
        Image("php", "evalplatform/php:8.2", ("php-cli",)),
        Image("perl", "evalplatform/perl:5.36", ("perl",)),
        Image(
            # Small interpreters that fit one layer: shells, awk, bc, Tcl, Lua.
            "scripting",
            "evalplatform/scripting:bookworm",
            ("bash", "gawk", "bc", "tcl8.6", "lua5.4", "luajit"),
        ),
        Image("mono", "evalplatform/mono:6.8", ("mono-mcs",)),
        Image("sbcl", "evalplatform/sbcl:2.2", ("sbcl",)),
        Image("guile", "evalplatform/guile:3.0", ("guile-3.0",)),
        Image("prolog", "evalplatform/swipl:9.0", ("swi-prolog-nox",)),
        Image("erlang", "evalplatform/erlang:25", ("erlang-base",)),
        Image("elixir", "evalplatform/elixir:1.14", ("elixir",), parent="erlang"),
        Image("racket", "evalplatform/racket:8.7", ("racket",)),
        Image("r", "evalplatform/r:4.2", ("r-base-core",)),
        Image("raku", "evalplatform/raku:2022.12", ("rakudo",)),
        Image("polyml", "evalplatform/polyml:5.7", ("polyml",)),
    )
}


def image_chain(name: str) -> list[Image]:
    """The image and its ancestors, base first."""
    chain: list[Image] = []
    current: str | None = name
    while current is not None:
        image = IMAGES[current]
        chain.insert(0, image)
        current = image.parent
    return chain


def _c(includes: str, body: str) -> str:
    return f"{includes}\n\nint main(void) {{\n{body}}}\n"


_C_HELLO = _c("#include <stdio.h>", '    puts("Hello, world!");\n    return 0;\n')
_C_SELF_TEST = _c(
    "#include <stdio.h>",
    "    long a, b;\n"
    '    if (scanf("%ld %ld", &a, &b) != 2) return 1;\n'
    '    printf("%ld\\n", a + b);\n'
    "    return 0;\n",
)
_CPP_HELLO = (
    '#include <iostream>\n\nint main() {\n    std::cout << "Hello, world!" << std::endl;\n}\n'
)
_CPP17_SELF_TEST = (
    "#include <iostream>\n\n"
    "// A fold expression: C++17.\n"
    "template <typename... T> auto sum(T... values) { return (values + ...); }\n\n"
    "int main() {\n"
    "    long long a, b;\n"
    "    std::cin >> a >> b;\n"
    '    std::cout << sum(a, b) << "\\n";\n'
    "}\n"
)
_CPP20_SELF_TEST = (
    "#include <concepts>\n#include <iostream>\n\n"
    "// A constrained template: C++20.\n"
    "template <std::integral T> T add(T a, T b) { return a + b; }\n\n"
    "int main() {\n"
    "    long long a, b;\n"
    "    std::cin >> a >> b;\n"
    '    std::cout << add(a, b) << "\\n";\n'
    "}\n"
)
_PYTHON_HELLO = 'print("Hello, world!")\n'
_PYTHON_SELF_TEST = "import sys\n\nprint(sum(int(x) for x in sys.stdin.read().split()))\n"
_JS_SELF_TEST = (
    'const [a, b] = require("fs").readFileSync(0, "utf8").trim().split(/\\s+/).map(Number);\n'
    "console.log(a + b);\n"
)
_LUA_SELF_TEST = 'local a = io.read("*n")\nlocal b = io.read("*n")\nprint(a + b)\n'
_NASM = """        global  main
        extern  {functions}

        section .data
{data}
        section .text
main:
        sub     rsp, 8
{code}        xor     eax, eax
        add     rsp, 8
        ret
"""
_SCHEME_SELF_TEST = "(let* ((a (read)) (b (read)))\n  (display (+ a b))\n  (newline))\n"
_JAVA_RUN = ("java", *_JVM_FLAGS)


def _gcc(tool: str, standard: str, source: str, *extra: str) -> tuple[str, ...]:
    return (tool, f"-std={standard}", "-O2", "-pipe", "-o", "main", source, *extra)


ENTRIES: tuple[Entry, ...] = (
    # --- tier 1: built and self-tested on every CI run
    Entry(
        "c-gcc12",
        "C",
        "C17, GCC 12",
        "gcc",
        "main.c",
        ("./main",),
        _C_HELLO,
        _C_SELF_TEST,
        "text/x-csrc",
        compile_command=_gcc("gcc", "c17", "main.c", "-lm"),
        tier=1,
    ),
    Entry(
        "cpp17-gcc12",
        "C++",
        "C++17, GCC 12",
        "gcc",
        "main.cpp",
        ("./main",),
        _CPP_HELLO,
        _CPP17_SELF_TEST,
        "text/x-c++src",
        compile_command=_gcc("g++", "c++17", "main.cpp"),
        tier=1,
    ),
    Entry(
        "cpp20-gcc12",
        "C++",
        "C++20, GCC 12",
        "gcc",
        "main.cpp",
        ("./main",),
        _CPP_HELLO,
        _CPP20_SELF_TEST,
        "text/x-c++src",
        compile_command=_gcc("g++", "c++20", "main.cpp"),
        tier=1,
    ),
    Entry(
        "java-17",
        "Java",
        "OpenJDK 17",
        "java",
        "Main.java",
        (*_JAVA_RUN, "Main"),
        "public class Main {\n    public static void main(String[] args) {\n"
        '        System.out.println("Hello, world!");\n    }\n}\n',
        "import java.util.Scanner;\n\npublic class Main {\n"
        "    public static void main(String[] args) {\n"
        "        Scanner in = new Scanner(System.in);\n"
        "        long a = in.nextLong(), b = in.nextLong();\n"
        "        System.out.println(a + b);\n    }\n}\n",
        "text/x-java",
        compile_command=("javac", "-J-XX:+UseSerialGC", "-encoding", "UTF-8", "Main.java"),
        limits=_JVM_LIMITS,
        tier=1,
    ),
    Entry(
        "javascript-node18",
        "JavaScript",
        "Node.js 18",
        "node",
        "main.js",
        ("node", "main.js"),
        'console.log("Hello, world!");\n',
        _JS_SELF_TEST,
        "text/javascript",
        limits=Limits(memory_mb=512, max_memory_mb=1024, pids=64),
        tier=1,
    ),
    Entry(
        "go-1.19",
        "Go",
        "Go 1.19",
        "go",
        "main.go",
        ("./main",),
        'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("Hello, world!")\n}\n',
        'package main\n\nimport "fmt"\n\nfunc main() {\n\tvar a, b int64\n'
        "\tfmt.Scan(&a, &b)\n\tfmt.Println(a + b)\n}\n",
        "text/x-go",
        compile_command=("go", "build", "-o", "main", "main.go"),
        limits=_HEAVY_COMPILE,
        tier=1,
    ),
    Entry(
        "rust-1.63",
        "Rust",
        "Rust 1.63",
        "rust",
        "main.rs",
        ("./main",),
        'fn main() {\n    println!("Hello, world!");\n}\n',
        "use std::io::Read;\n\nfn main() {\n    let mut input = String::new();\n"
        "    std::io::stdin().read_to_string(&mut input).unwrap();\n"
        "    let sum: i64 = input.split_whitespace().map(|x| x.parse::<i64>().unwrap()).sum();\n"
        '    println!("{}", sum);\n}\n',
        "text/x-rustsrc",
        compile_command=("rustc", "-O", "--edition", "2021", "-o", "main", "main.rs"),
        limits=_HEAVY_COMPILE,
        tier=1,
    ),
    Entry(
        "python-3.11",
        "Python",
        "Python 3.11",
        "python",
        "main.py",
        ("python3", "main.py"),
        _PYTHON_HELLO,
        _PYTHON_SELF_TEST,
        "text/x-python",
        tier=1,
    ),
    # --- tier 2: built and self-tested by `make runtimes`
    Entry(
        "c-clang14",
        "C",
        "C17, Clang 14",
        "clang",
        "main.c",
        ("./main",),
        _C_HELLO,
        _C_SELF_TEST,
        "text/x-csrc",
        compile_command=_gcc("clang", "c17", "main.c", "-lm"),
    ),
    Entry(
        "cpp17-clang14",
        "C++",
        "C++17, Clang 14",
        "clang",
        "main.cpp",
        ("./main",),
        _CPP_HELLO,
        _CPP17_SELF_TEST,
        "text/x-c++src",
        compile_command=_gcc("clang++", "c++17", "main.cpp"),
    ),
    Entry(
        "objective-c-gcc12",
        "Objective-C",
        "GCC 12",
        "objc",
        "main.m",
        ("./main",),
        '#include <stdio.h>\n\nint main(void) {\n    puts("Hello, world!");\n    return 0;\n}\n',
        "#import <objc/Object.h>\n#include <stdio.h>\n\n"
        "@interface Adder : Object\n+ (long)add:(long)a to:(long)b;\n@end\n\n"
        "@implementation Adder\n+ (long)add:(long)a to:(long)b { return a + b; }\n@end\n\n"
        "int main(void) {\n    long a, b;\n"
        '    if (scanf("%ld %ld", &a, &b) != 2) return 1;\n'
        '    printf("%ld\\n", [Adder add:a to:b]);\n    return 0;\n}\n',
        "text/x-objectivec",
        compile_command=("gcc", "-O2", "-pipe", "-o", "main", "main.m", "-lobjc"),
    ),
    Entry(
        "fortran-gfortran12",
        "Fortran",
        "Fortran 2018, GFortran 12",
        "fortran",
        "main.f90",
        ("./main",),
        "program main\n  print '(a)', \"Hello, world!\"\nend program main\n",
        "program main\n  implicit none\n  integer(kind=8) :: a, b\n  read *, a, b\n"
        "  print '(i0)', a + b\nend program main\n",
        "text/x-fortran",
        compile_command=("gfortran", "-O2", "-pipe", "-o", "main", "main.f90"),
    ),
    Entry(
        "ada-gnat12",
        "Ada",
        "Ada 2012, GNAT 12",
        "ada",
        "main.adb",
        ("./main",),
        "with Ada.Text_IO;\n\nprocedure Main is\nbegin\n"
        '   Ada.Text_IO.Put_Line ("Hello, world!");\nend Main;\n',
        "with Ada.Text_IO;\nwith Ada.Long_Long_Integer_Text_IO;\n\nprocedure Main is\n"
        "   A, B : Long_Long_Integer;\nbegin\n"
        "   Ada.Long_Long_Integer_Text_IO.Get (A);\n"
        "   Ada.Long_Long_Integer_Text_IO.Get (B);\n"
        "   Ada.Long_Long_Integer_Text_IO.Put (A + B, Width => 0);\n"
        "   Ada.Text_IO.New_Line;\nend Main;\n",
        "text/x-ada",
        compile_command=("gnatmake", "-q", "-O2", "main.adb", "-o", "main"),
    ),
    Entry(
        "d-gdc12",
        "D",
        "GDC 12",
        "d",
        "main.d",
        ("./main",),
        'import std.stdio;\n\nvoid main()\n{\n    writeln("Hello, world!");\n}\n',
        'import std.stdio;\n\nvoid main()\n{\n    long a, b;\n    readf(" %d %d", a, b);\n'
        "    writeln(a + b);\n}\n",
        "text/x-d",
        compile_command=("gdc", "-O2", "-pipe", "-o", "main", "main.d"),
        limits=_HEAVY_COMPILE,
    ),
    Entry(
        "assembly-nasm2.16",
        "Assembly",
        "x86-64, NASM 2.16",
        "nasm",
        "main.asm",
        ("./main",),
        _NASM.format(
            functions="puts",
            data='message: db      "Hello, world!", 0\n',
            code="        lea     rdi, [rel message]\n        call    puts wrt ..plt\n",
        ),
        _NASM.format(
            functions="printf, scanf",
            data='input:  db      "%ld %ld", 0\noutput: db      "%ld", 10, 0\n'
            "a:      dq      0\nb:      dq      0\n",
            code="        lea     rdi, [rel input]\n        lea     rsi, [rel a]\n"
            "        lea     rdx, [rel b]\n        xor     eax, eax\n"
            "        call    scanf wrt ..plt\n        mov     rsi, [rel a]\n"
            "        add     rsi, [rel b]\n        lea     rdi, [rel output]\n"
            "        xor     eax, eax\n        call    printf wrt ..plt\n",
        ),
        "text/x-nasm",
        # Two tools: the assembler, then the C toolchain's linker with the C library.
        compile_command=(
            "sh",
            "-c",
            "nasm -f elf64 -o main.o main.asm && gcc -o main main.o",
        ),
    ),
    Entry(
        "haskell-ghc9.0",
        "Haskell",
        "GHC 9.0",
        "haskell",
        "main.hs",
        ("./main",),
        'main :: IO ()\nmain = putStrLn "Hello, world!"\n',
        "main :: IO ()\nmain = do\n  input <- getContents\n"
        "  print (sum (map read (words input) :: [Integer]))\n",
        "text/x-haskell",
        compile_command=("ghc", "-O2", "-o", "main", "main.hs"),
        limits=_HEAVY_COMPILE,
    ),
    Entry(
        "ocaml-4.13",
        "OCaml",
        "OCaml 4.13",
        "ocaml",
        "main.ml",
        ("./main",),
        'let () = print_endline "Hello, world!"\n',
        'let () = Scanf.scanf " %d %d" (fun a b -> Printf.printf "%d\\n" (a + b))\n',
        "text/x-ocaml",
        compile_command=("ocamlopt", "-o", "main", "main.ml"),
    ),
    Entry(
        "pascal-fpc3.2",
        "Pascal",
        "Free Pascal 3.2",
        "pascal",
        "main.pas",
        ("./main",),
        "program Main;\nbegin\n  writeln('Hello, world!');\nend.\n",
        "program Main;\nvar\n  a, b: Int64;\nbegin\n  read(a);\n  read(b);\n"
        "  writeln(a + b);\nend.\n",
        "text/x-pascal",
        compile_command=("fpc", "-O2", "-omain", "main.pas"),
    ),
    Entry(
        "cobol-gnucobol3.1",
        "COBOL",
        "GnuCOBOL 3.1",
        "cobol",
        "main.cob",
        ("./main",),
        "IDENTIFICATION DIVISION.\nPROGRAM-ID. MAIN.\nPROCEDURE DIVISION.\n"
        '    DISPLAY "Hello, world!".\n    STOP RUN.\n',
        "IDENTIFICATION DIVISION.\nPROGRAM-ID. MAIN.\nDATA DIVISION.\n"
        "WORKING-STORAGE SECTION.\n01 A PIC S9(18).\n01 B PIC S9(18).\n"
        "01 S PIC -(18)9.\n01 LINE-IN PIC X(40).\nPROCEDURE DIVISION.\n"
        "    ACCEPT LINE-IN.\n    COMPUTE A = FUNCTION NUMVAL(LINE-IN).\n"
        "    ACCEPT LINE-IN.\n    COMPUTE B = FUNCTION NUMVAL(LINE-IN).\n"
        "    COMPUTE S = A + B.\n    DISPLAY FUNCTION TRIM(S).\n    STOP RUN.\n",
        "text/x-cobol",
        compile_command=("cobc", "-x", "-free", "-O2", "-o", "main", "main.cob"),
    ),
    Entry(
        "nim-1.6",
        "Nim",
        "Nim 1.6",
        "nim",
        "main.nim",
        ("./main",),
        'echo "Hello, world!"\n',
        "import strutils\n\nlet a = parseInt(readLine(stdin).strip())\n"
        "let b = parseInt(readLine(stdin).strip())\necho a + b\n",
        "text/x-nim",
        compile_command=(
            "nim",
            "compile",
            "--define:release",
            "--hints:off",
            "--nimcache:/tmp/nimcache",
            "--out:main",
            "main.nim",
        ),
        limits=_HEAVY_COMPILE,
    ),
    Entry(
        "crystal-1.6",
        "Crystal",
        "Crystal 1.6",
        "crystal",
        "main.cr",
        ("./main",),
        'puts "Hello, world!"\n',
        "a = gets.not_nil!.to_i64\nb = gets.not_nil!.to_i64\nputs a + b\n",
        "text/x-crystal",
        compile_command=("crystal", "build", "--no-debug", "-o", "main", "main.cr"),
        limits=_HEAVY_COMPILE,
    ),
    Entry(
        "vala-0.56",
        "Vala",
        "Vala 0.56",
        "vala",
        "main.vala",
        ("./main",),
        'void main () {\n    print ("Hello, world!\\n");\n}\n',
        "void main () {\n    int64 a = int64.parse (stdin.read_line ());\n"
        "    int64 b = int64.parse (stdin.read_line ());\n"
        '    print ((a + b).to_string () + "\\n");\n}\n',
        "text/x-vala",
        compile_command=("valac", "-o", "main", "main.vala"),
        limits=_HEAVY_COMPILE,
    ),
    Entry(
        "scheme-chicken5.3",
        "Scheme",
        "CHICKEN 5.3",
        "chicken",
        "main.scm",
        ("./main",),
        '(print "Hello, world!")\n',
        "(define a (read))\n(define b (read))\n(print (+ a b))\n",
        "text/x-scheme",
        compile_command=("csc", "-O3", "-o", "main", "main.scm"),
    ),
    Entry(
        "kotlin-1.3",
        "Kotlin",
        "Kotlin 1.3 (JVM 17)",
        "kotlin",
        "main.kt",
        (*_JAVA_RUN, "-jar", "main.jar"),
        'fun main() {\n    println("Hello, world!")\n}\n',
        "fun main() {\n    val a = readLine()!!.trim().toLong()\n"
        "    val b = readLine()!!.trim().toLong()\n    println(a + b)\n}\n",
        "text/x-kotlin",
        compile_command=("kotlinc", "main.kt", "-include-runtime", "-d", "main.jar"),
        limits=_JVM_LIMITS,
    ),
    Entry(
        "scala-2.11",
        "Scala",
        "Scala 2.11 (JVM 17)",
        "scala",
        "main.scala",
        ("scala", "-nc", "-cp", ".", "Main"),
        'object Main {\n  def main(args: Array[String]): Unit = {\n    println("Hello, world!")\n'
        "  }\n}\n",
        "object Main {\n  def main(args: Array[String]): Unit = {\n"
        '    val numbers = scala.io.Source.stdin.mkString.split("\\\\s+").filter(_.nonEmpty)\n'
        "    println(numbers.map(_.toLong).sum)\n  }\n}\n",
        "text/x-scala",
        compile_command=("scalac", "-d", ".", "main.scala"),
        limits=_JVM_LIMITS,
    ),
    Entry(
        "clojure-1.11",
        "Clojure",
        "Clojure 1.11 (JVM 17)",
        "clojure",
        "main.clj",
        ("clojure", "main.clj"),
        '(println "Hello, world!")\n',
        '(let [numbers (map #(Long/parseLong %) (re-seq #"-?\\d+" (slurp *in*)))]\n'
        "  (println (reduce + numbers)))\n",
        "text/x-clojure",
        limits=_JVM_LIMITS,
    ),
    Entry(
        "groovy-2.4",
        "Groovy",
        "Groovy 2.4 (JVM 17)",
        "groovy",
        "main.groovy",
        ("groovy", "main.groovy"),
        'println "Hello, world!"\n',
        "def numbers = System.in.text.split().collect { it as long }\nprintln numbers.sum()\n",
        "text/x-groovy",
        limits=_JVM_LIMITS,
    ),
    Entry(
        "csharp-mono6.8",
        "C#",
        "Mono 6.8",
        "mono",
        "main.cs",
        ("mono", "main.exe"),
        "using System;\n\nclass Program\n{\n    static void Main()\n    {\n"
        '        Console.WriteLine("Hello, world!");\n    }\n}\n',
        "using System;\n\nclass Program\n{\n    static void Main()\n    {\n"
        "        string[] parts = Console.In.ReadToEnd().Split(\n"
        "            (char[])null, StringSplitOptions.RemoveEmptyEntries);\n"
        "        long sum = 0;\n"
        "        foreach (string part in parts) sum += long.Parse(part);\n"
        "        Console.WriteLine(sum);\n    }\n}\n",
        "text/x-csharp",
        compile_command=("mcs", "-optimize+", "-out:main.exe", "main.cs"),
        limits=Limits(memory_mb=512, max_memory_mb=1024, pids=128),
    ),
    Entry(
        "typescript-4.8",
        "TypeScript",
        "TypeScript 4.8, Node.js 18",
        "typescript",
        "main.ts",
        ("node", "main.js"),
        'const greeting: string = "Hello, world!";\nconsole.log(greeting);\n',
        "declare const require: (name: string) => any;\n\n"
        'const input: string = require("fs").readFileSync(0, "utf8");\n'
        "const [a, b]: number[] = input.trim().split(/\\s+/).map(Number);\n"
        "console.log(a + b);\n",
        "application/typescript",
        compile_command=("tsc", "--strict", "--target", "es2020", "main.ts"),
        limits=Limits(memory_mb=512, max_memory_mb=1024, compile_memory_mb=1024),
    ),
    Entry(
        "coffeescript-2.7",
        "CoffeeScript",
        "CoffeeScript 2.7, Node.js 18",
        "coffeescript",
        "main.coffee",
        ("coffee", "main.coffee"),
        'console.log "Hello, world!"\n',
        'input = require("fs").readFileSync(0, "utf8")\n'
        "numbers = (Number(x) for x in input.trim().split(/\\s+/))\n"
        "console.log numbers.reduce((a, b) -> a + b)\n",
        "text/x-coffeescript",
        limits=Limits(memory_mb=512, max_memory_mb=1024),
    ),
    Entry(
        "pypy-3.9",
        "Python",
        "PyPy 7.3, Python 3.9",
        "pypy",
        "main.py",
        ("pypy3", "main.py"),
        _PYTHON_HELLO,
        _PYTHON_SELF_TEST,
        "text/x-python",
        limits=Limits(memory_mb=512, max_memory_mb=1024),
    ),
    Entry(
        "ruby-3.1",
        "Ruby",
        "Ruby 3.1",
        "ruby",
        "main.rb",
        ("ruby", "main.rb"),
        'puts "Hello, world!"\n',
        "puts STDIN.read.split.map(&:to_i).sum\n",
        "text/x-ruby",
    ),
    Entry(
        "php-8.2",
        "PHP",
        "PHP 8.2",
        "php",
        "main.php",
        ("php", "main.php"),
        '<?php\necho "Hello, world!\\n";\n',
        '<?php\n$numbers = preg_split("/\\s+/", trim(stream_get_contents(STDIN)));\n'
        'echo array_sum(array_map("intval", $numbers)), "\\n";\n',
        "text/x-php",
    ),
    Entry(
        "perl-5.36",
        "Perl",
        "Perl 5.36",
        "perl",
        "main.pl",
        ("perl", "main.pl"),
        'print "Hello, world!\\n";\n',
        'my $sum = 0;\n$sum += $_ for split " ", join "", <STDIN>;\nprint "$sum\\n";\n',
        "text/x-perl",
    ),
    Entry(
        "raku-2022.12",
        "Raku",
        "Rakudo 2022.12",
        "raku",
        "main.raku",
        ("raku", "main.raku"),
        'say "Hello, world!";\n',
        "say [+] $*IN.words;\n",
        "text/x-perl",
        limits=Limits(memory_mb=512, max_memory_mb=1024, pids=64),
    ),
    Entry(
        "lua-5.4",
        "Lua",
        "Lua 5.4",
        "scripting",
        "main.lua",
        ("lua5.4", "main.lua"),
        'print("Hello, world!")\n',
        _LUA_SELF_TEST,
        "text/x-lua",
    ),
    Entry(
        "luajit-2.1",
        "Lua",
        "LuaJIT 2.1, Lua 5.1",
        "scripting",
        "main.lua",
        ("luajit", "main.lua"),
        'print("Hello, world!")\n',
        _LUA_SELF_TEST,
        "text/x-lua",
    ),
    Entry(
        "bash-5.2",
        "Bash",
        "Bash 5.2",
        "scripting",
        "main.sh",
        ("bash", "main.sh"),
        'echo "Hello, world!"\n',
        "read -r a\nread -r b\necho $((a + b))\n",
        "text/x-sh",
    ),
    Entry(
        "awk-gawk5.2",
        "AWK",
        "GNU Awk 5.2",
        "scripting",
        "main.awk",
        ("gawk", "-f", "main.awk"),
        'BEGIN { print "Hello, world!" }\n',
        "{ for (i = 1; i <= NF; i++) sum += $i }\nEND { print sum }\n",
        "text/x-awk",
    ),
    Entry(
        "bc-1.07",
        "bc",
        "GNU bc 1.07",
        "scripting",
        "main.bc",
        ("bc", "-q", "main.bc"),
        'print "Hello, world!\\n"\nhalt\n',
        'a = read()\nb = read()\nprint a + b, "\\n"\nhalt\n',
        "text/x-bc",
    ),
    Entry(
        "tcl-8.6",
        "Tcl",
        "Tcl 8.6",
        "scripting",
        "main.tcl",
        ("tclsh8.6", "main.tcl"),
        'puts "Hello, world!"\n',
        "set a [gets stdin]\nset b [gets stdin]\nputs [expr {$a + $b}]\n",
        "text/x-tcl",
    ),
    Entry(
        "commonlisp-sbcl2.2",
        "Common Lisp",
        "SBCL 2.2",
        "sbcl",
        "main.lisp",
        ("sbcl", "--script", "main.lisp"),
        '(write-line "Hello, world!")\n',
        '(let ((a (read)) (b (read)))\n  (format t "~D~%" (+ a b)))\n',
        "text/x-common-lisp",
        limits=Limits(memory_mb=512, max_memory_mb=1024),
    ),
    Entry(
        "scheme-guile3.0",
        "Scheme",
        "GNU Guile 3.0",
        "guile",
        "main.scm",
        ("guile", "--no-auto-compile", "-s", "main.scm"),
        '(display "Hello, world!")\n(newline)\n',
        _SCHEME_SELF_TEST,
        "text/x-scheme",
    ),
    Entry(
        "racket-8.7",
        "Racket",
        "Racket 8.7",
        "racket",
        "main.rkt",
        ("racket", "main.rkt"),
        '#lang racket/base\n(displayln "Hello, world!")\n',
        "#lang racket/base\n(define a (read))\n(define b (read))\n(displayln (+ a b))\n",
        "text/x-scheme",
        limits=Limits(memory_mb=512, max_memory_mb=1024),
    ),
    Entry(
        "prolog-swipl9.0",
        "Prolog",
        "SWI-Prolog 9.0",
        "prolog",
        "main.pl",
        ("swipl", "main.pl"),
        ":- initialization(main, main).\n\nmain :- writeln('Hello, world!').\n",
        ":- initialization(main, main).\n\nmain :-\n"
        "    read_line_to_string(user_input, A),\n"
        "    read_line_to_string(user_input, B),\n"
        "    number_string(X, A),\n    number_string(Y, B),\n"
        "    Sum is X + Y,\n    writeln(Sum).\n",
        "text/x-prolog",
    ),
    Entry(
        "erlang-25",
        "Erlang",
        "Erlang/OTP 25",
        "erlang",
        "main.erl",
        ("escript", "main.erl"),
        '-module(main).\n-export([main/1]).\n\nmain(_) ->\n    io:format("Hello, world!~n").\n',
        "-module(main).\n-export([main/1]).\n\nmain(_) ->\n"
        '    {ok, [A, B]} = io:fread("", "~d ~d"),\n'
        '    io:format("~B~n", [A + B]).\n',
        "text/x-erlang",
        limits=Limits(memory_mb=512, max_memory_mb=1024, pids=128),
    ),
    Entry(
        "elixir-1.14",
        "Elixir",
        "Elixir 1.14 (Erlang/OTP 25)",
        "elixir",
        "main.exs",
        ("elixir", "main.exs"),
        'IO.puts("Hello, world!")\n',
        "IO.read(:stdio, :eof)\n|> String.split()\n|> Enum.map(&String.to_integer/1)\n"
        "|> Enum.sum()\n|> IO.puts()\n",
        "text/x-elixir",
        limits=Limits(memory_mb=512, max_memory_mb=1024, pids=128),
    ),
    Entry(
        "r-4.2",
        "R",
        "R 4.2",
        "r",
        "main.R",
        ("Rscript", "main.R"),
        'cat("Hello, world!\\n")\n',
        'numbers <- scan(file("stdin"), what = integer(), quiet = TRUE)\n'
        'cat(sum(numbers), "\\n", sep = "")\n',
        "text/x-rsrc",
        # R refuses to start with fewer than about 170 files (its DLL table).
        limits=Limits(memory_mb=512, max_memory_mb=1024, open_files=256),
    ),
    Entry(
        "sml-polyml5.7",
        "Standard ML",
        "Poly/ML 5.7",
        "polyml",
        "main.sml",
        ("poly", "--script", "main.sml"),
        'val () = print "Hello, world!\\n";\n',
        "fun readInt () =\n  case TextIO.inputLine TextIO.stdIn of\n"
        "      SOME line => valOf (Int.fromString line)\n    | NONE => 0;\n\n"
        "val a = readInt ();\nval b = readInt ();\n"
        'val () = print (Int.toString (a + b) ^ "\\n");\n',
        "text/x-sml",
        limits=Limits(memory_mb=512, max_memory_mb=1024),
    ),
)

ENTRY_BY_NAME: dict[str, Entry] = {entry.name: entry for entry in ENTRIES}
