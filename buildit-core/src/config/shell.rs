//! Where each `{variable}` of a `run` command lands in POSIX shell syntax, and the reference that carries its
//! value there.
//!
//! A substituted value never becomes part of the script's text: the script refers to an environment variable
//! that holds the value, written for the place it lands in (`"${BUILDIT_BRANCH}"` outside quotes,
//! `${BUILDIT_BRANCH}` inside double quotes or a here-document, `'"${BUILDIT_BRANCH}"'` inside single quotes).
//! A parameter expansion is never parsed again, so the value reaches the command byte for byte, whatever it
//! holds. Where no reference is literal (arithmetic, a quoted here-document, `eval`, the script of `sh -c`),
//! the template is refused with a reason, before anything runs.

/// How a variable is referred to where it lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landing {
    /// Outside quotes (also a `case` word or pattern, an assignment, inside `$(...)`): `"${NAME}"`.
    Unquoted,
    /// Inside double quotes: `${NAME}`.
    DoubleQuoted,
    /// Inside single quotes: the quote is closed around `"${NAME}"`.
    SingleQuoted,
    /// Inside bash's `$'...'`: the quote is closed around `"${NAME}"` and reopened as `$'`.
    AnsiCQuoted,
    /// In the body of an unquoted here-document: `${NAME}`.
    HereDocument,
    /// In a comment: nothing runs it.
    Comment,
}

impl Landing {
    /// The text that refers to the environment variable `name` at this place.
    pub fn reference(self, name: &str) -> String {
        match self {
            Self::Unquoted | Self::Comment => format!("\"${{{name}}}\""),
            Self::DoubleQuoted | Self::HereDocument => format!("${{{name}}}"),
            Self::SingleQuoted => format!("'\"${{{name}}}\"'"),
            Self::AnsiCQuoted => format!("'\"${{{name}}}\"$'"),
        }
    }
}

/// Why a variable cannot be substituted where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What the shell would do with the value there, as a sentence fragment.
    pub reason: String,
    /// What to write instead; `BUILDIT_VALUE` stands for the variable's environment variable.
    pub help: String,
}

impl Refusal {
    /// The help, naming the environment variable `name`.
    pub fn help_for(&self, name: &str) -> String {
        self.help.replace("BUILDIT_VALUE", name)
    }
}

/// One piece of a command: text as written, or a variable.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Piece<'a> {
    Text(&'a str),
    Variable,
}

/// The landing of each variable in `pieces`, in order.
pub(crate) fn landings<'a>(
    pieces: impl IntoIterator<Item = Piece<'a>>,
) -> Vec<Result<Landing, Refusal>> {
    let mut lexer = Lexer::default();
    for piece in pieces {
        match piece {
            Piece::Text(text) => lexer.text(text),
            Piece::Variable => lexer.variable(),
        }
    }
    lexer.landings
}

/// Commands that run their arguments as shell code.
const EVALUATORS: [&str; 6] = ["eval", "trap", "ssh", "watch", "parallel", "alias"];
/// Commands whose `-c` option takes a script.
const SHELLS: [&str; 12] = [
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "yash", "posh", "su", "runuser", "flock",
];
/// Reserved words after which the next word is a command name again.
const RESERVED: [&str; 14] = [
    "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "time", "in",
];
/// `[[ ]]` operators that evaluate their operands as arithmetic.
const ARITHMETIC_TESTS: [&str; 6] = ["-eq", "-ne", "-lt", "-le", "-gt", "-ge"];

/// What closes a command context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closer {
    /// The end of the text.
    End,
    /// `)` of `$(`.
    Paren,
    /// An unescaped backquote.
    Backquote,
}

/// A `[[ ... ]]` being read: its variables are refused once an arithmetic operator shows up.
#[derive(Debug, Default)]
struct TestExpression {
    variables: Vec<usize>,
    arithmetic: bool,
}

/// The state of a command context (the top level, `$(...)`, backquotes).
#[derive(Debug)]
struct Command {
    closer: Closer,
    /// Open `(` inside this context (subshells, `case` patterns written with a leading `(`).
    parens: u32,
    /// The current word, with quotes removed; `None` between words.
    word: Option<String>,
    /// The current word holds a variable or an expansion.
    word_expands: bool,
    /// The current word holds quotes or backslashes.
    word_quoted: bool,
    /// Index of the current word in its simple command.
    position: usize,
    /// An earlier word of the simple command runs the rest as code (`eval`).
    evaluator: Option<String>,
    /// A shell was named, and its options are being read.
    shell_options: Option<String>,
    /// The next word is the argument of a shell's `-o`.
    shell_option_argument: bool,
    /// The next word (or the current one) is the script of `sh -c`.
    script: Option<String>,
    /// `let` was named.
    let_command: bool,
    /// The previous operator was `<<`/`<<-`: the next word is a here-document delimiter.
    heredoc_operator: Option<bool>,
    /// `[[` is open.
    test: Option<TestExpression>,
    /// Open `case` statements, and whether a pattern is being read.
    cases: u32,
    awaiting_in: bool,
    in_pattern: bool,
    /// Inside `\`` ... `\`` within backquotes: quoting there goes through another round of backslashes.
    nested_backquotes: bool,
}

impl Command {
    fn new(closer: Closer) -> Self {
        Self {
            closer,
            parens: 0,
            word: None,
            word_expands: false,
            word_quoted: false,
            position: 0,
            evaluator: None,
            shell_options: None,
            shell_option_argument: false,
            script: None,
            let_command: false,
            heredoc_operator: None,
            test: None,
            cases: 0,
            awaiting_in: false,
            in_pattern: false,
            nested_backquotes: false,
        }
    }

    fn push_char(&mut self, ch: char) {
        self.word.get_or_insert_with(String::new).push(ch);
    }

    fn mark_expanding(&mut self) {
        self.word.get_or_insert_with(String::new);
        self.word_expands = true;
    }

    /// A new simple command starts (after `;`, `&`, `|`, a newline, `(` or `)`).
    fn separate(&mut self) {
        self.position = 0;
        self.evaluator = None;
        self.shell_options = None;
        self.shell_option_argument = false;
        self.script = None;
        self.let_command = false;
    }
}

/// A here-document waiting for its body, or being read.
#[derive(Debug, Clone)]
struct HereDocument {
    delimiter: String,
    strip_tabs: bool,
    quoted: bool,
}

#[derive(Debug)]
enum Frame {
    Command(Command),
    Single,
    AnsiC,
    Double,
    /// `${...}`, with the depth of braces inside it.
    Parameter(u32),
    /// `$((...))`, `((...))` or `$[...]`, with the depth of parentheses inside it.
    Arithmetic {
        parens: u32,
        bracket: bool,
    },
    Comment,
    /// The body of a here-document, with the current line so far.
    Body {
        document: HereDocument,
        line: String,
        line_expands: bool,
    },
}

#[derive(Debug)]
struct Lexer {
    /// The script's top level.
    root: Command,
    /// What is open inside it, innermost last.
    stack: Vec<Frame>,
    /// Here-documents whose operator was read, waiting for the end of the line.
    pending: Vec<HereDocument>,
    /// `$'...'` held `\'`, which bash and dash read differently: the two disagree on what follows.
    ambiguous: bool,
    landings: Vec<Result<Landing, Refusal>>,
}

impl Default for Lexer {
    fn default() -> Self {
        Self {
            root: Command::new(Closer::End),
            stack: Vec::new(),
            pending: Vec::new(),
            ambiguous: false,
            landings: Vec::new(),
        }
    }
}

impl Lexer {
    fn text(&mut self, text: &str) {
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        while let Some(&ch) = chars.get(i) {
            let next = chars.get(i + 1).copied();
            let after = chars.get(i + 2).copied();
            i += self.step(ch, next, after);
        }
    }

    /// Handles `ch` (looking at the two characters after it where it must) and says how many characters were
    /// consumed: 0 when `ch` must be handled again in the context it closed.
    fn step(&mut self, ch: char, next: Option<char>, after: Option<char>) -> usize {
        let Some(frame) = self.stack.last_mut() else {
            return self.command_step(ch, next, after);
        };
        match frame {
            Frame::Single => {
                if ch == '\'' {
                    self.stack.pop();
                } else {
                    self.command_mut().push_char(ch);
                }
                1
            }
            Frame::AnsiC => match ch {
                '\\' => {
                    if next == Some('\'') {
                        self.ambiguous = true;
                    }
                    self.command_mut().mark_expanding();
                    2
                }
                '\'' => {
                    self.stack.pop();
                    1
                }
                _ => {
                    self.command_mut().push_char(ch);
                    1
                }
            },
            Frame::Comment => {
                if ch == '\n' {
                    self.stack.pop();
                    // The newline also ends the command line.
                    0
                } else {
                    1
                }
            }
            Frame::Double => match ch {
                '"' => {
                    self.stack.pop();
                    1
                }
                '\\' => {
                    if let Some(escaped) = next {
                        if escaped == '`' {
                            self.backquote_escape();
                        }
                        self.command_mut().push_char(escaped);
                    }
                    2
                }
                '$' | '`' => self.expansion(ch, next, after, true),
                _ => {
                    self.command_mut().push_char(ch);
                    1
                }
            },
            Frame::Parameter(depth) => match ch {
                '{' => {
                    *depth += 1;
                    1
                }
                '}' => {
                    *depth -= 1;
                    if *depth == 0 {
                        self.stack.pop();
                    }
                    1
                }
                '\\' => 2,
                '"' => {
                    self.stack.push(Frame::Double);
                    1
                }
                '\'' if !self.in_double_quotes() => {
                    self.stack.push(Frame::Single);
                    1
                }
                '$' | '`' => self.expansion(ch, next, after, false),
                _ => 1,
            },
            Frame::Arithmetic { parens, bracket } => match ch {
                '(' if !*bracket => {
                    *parens += 1;
                    1
                }
                ')' if !*bracket && *parens > 0 => {
                    *parens -= 1;
                    1
                }
                ')' if !*bracket && next == Some(')') => {
                    self.stack.pop();
                    2
                }
                ']' if *bracket => {
                    self.stack.pop();
                    1
                }
                '$' | '`' => self.expansion(ch, next, after, false),
                '\\' => 2,
                _ => 1,
            },
            Frame::Body { .. } => self.body_step(ch, next, after),
            Frame::Command(_) => self.command_step(ch, next, after),
        }
    }

    /// A character of a here-document's body.
    fn body_step(&mut self, ch: char, next: Option<char>, after: Option<char>) -> usize {
        let Some(Frame::Body {
            document,
            line,
            line_expands,
        }) = self.stack.last_mut()
        else {
            return 1;
        };
        if ch == '\n' {
            let text = if document.strip_tabs {
                line.trim_start_matches('\t')
            } else {
                line.as_str()
            };
            let ends = !*line_expands && text == document.delimiter;
            line.clear();
            *line_expands = false;
            if ends {
                self.stack.pop();
                self.next_body();
            }
            return 1;
        }
        if document.quoted {
            line.push(ch);
            return 1;
        }
        match ch {
            '\\' => {
                line.push(ch);
                if let Some(escaped) = next {
                    if escaped == '\n' {
                        // A continued line is joined to the next: it is not a delimiter line.
                        *line_expands = true;
                    } else {
                        line.push(escaped);
                    }
                }
                2
            }
            '$' | '`' => {
                *line_expands = true;
                self.expansion(ch, next, after, true)
            }
            _ => {
                line.push(ch);
                1
            }
        }
    }

    /// Starts the body of the next waiting here-document, if any.
    fn next_body(&mut self) {
        if !self.pending.is_empty() {
            let document = self.pending.remove(0);
            self.stack.push(Frame::Body {
                document,
                line: String::new(),
                line_expands: false,
            });
        }
    }

    /// `$` or a backquote at the start of `ch next after`, in a context where expansions happen. Outside
    /// double quotes (`quoted` false), `$'` opens an ANSI-C quote.
    fn expansion(
        &mut self,
        ch: char,
        next: Option<char>,
        after: Option<char>,
        quoted: bool,
    ) -> usize {
        if ch == '`' {
            if self.closes_backquote() {
                self.close_backquote();
            } else {
                self.command_mut().mark_expanding();
                self.stack
                    .push(Frame::Command(Command::new(Closer::Backquote)));
            }
            return 1;
        }
        match next {
            Some('(') if after == Some('(') => {
                self.command_mut().mark_expanding();
                self.stack.push(Frame::Arithmetic {
                    parens: 0,
                    bracket: false,
                });
                3
            }
            Some('(') => {
                self.command_mut().mark_expanding();
                self.stack.push(Frame::Command(Command::new(Closer::Paren)));
                2
            }
            Some('{') => {
                self.command_mut().mark_expanding();
                self.stack.push(Frame::Parameter(1));
                2
            }
            Some('[') => {
                self.command_mut().mark_expanding();
                self.stack.push(Frame::Arithmetic {
                    parens: 0,
                    bracket: true,
                });
                2
            }
            Some('\'') if !quoted => {
                self.command_mut().mark_expanding();
                self.stack.push(Frame::AnsiC);
                2
            }
            Some(c) if c.is_ascii_alphanumeric() || "_@*#?$!-".contains(c) => {
                self.command_mut().mark_expanding();
                2
            }
            _ => {
                self.command_mut().push_char('$');
                1
            }
        }
    }

    /// Whether an unescaped backquote here closes a backquoted command rather than opening one.
    fn closes_backquote(&self) -> bool {
        for frame in self.stack.iter().rev() {
            match frame {
                Frame::Command(command) => return command.closer == Closer::Backquote,
                // Quotes inside backquotes end with them (a shell reports the unfinished quote).
                Frame::Double | Frame::Single | Frame::AnsiC | Frame::Parameter(_) => {}
                _ => return false,
            }
        }
        false
    }

    fn close_backquote(&mut self) {
        while let Some(frame) = self.stack.pop() {
            if matches!(&frame, Frame::Command(command) if command.closer == Closer::Backquote) {
                break;
            }
        }
    }

    /// `\`` inside backquotes opens or closes backquotes nested in them.
    fn backquote_escape(&mut self) {
        if let Some(command) = self.backquoted_command_mut() {
            command.nested_backquotes = !command.nested_backquotes;
        }
    }

    fn backquoted_command_mut(&mut self) -> Option<&mut Command> {
        self.stack.iter_mut().rev().find_map(|frame| match frame {
            Frame::Command(command) if command.closer == Closer::Backquote => Some(command),
            _ => None,
        })
    }

    fn in_double_quotes(&self) -> bool {
        self.stack
            .iter()
            .rev()
            .find_map(|frame| match frame {
                Frame::Double => Some(true),
                Frame::Command(_) | Frame::Body { .. } => Some(false),
                _ => None,
            })
            .unwrap_or(false)
    }

    /// The innermost command context.
    fn command_mut(&mut self) -> &mut Command {
        let root = &mut self.root;
        self.stack
            .iter_mut()
            .rev()
            .find_map(|frame| match frame {
                Frame::Command(command) => Some(command),
                _ => None,
            })
            .unwrap_or(root)
    }

    /// The command context on top, if the top is one.
    fn top_command_mut(&mut self) -> Option<&mut Command> {
        match self.stack.last_mut() {
            None => Some(&mut self.root),
            Some(Frame::Command(command)) => Some(command),
            Some(_) => None,
        }
    }

    /// A character in a command context.
    fn command_step(&mut self, ch: char, next: Option<char>, after: Option<char>) -> usize {
        let Some(command) = self.top_command_mut() else {
            return 1;
        };
        match ch {
            '\\' => match next {
                // A continued line.
                Some('\n') => 2,
                Some('`') if command.closer == Closer::Backquote => {
                    command.nested_backquotes = !command.nested_backquotes;
                    command.mark_expanding();
                    2
                }
                Some(escaped) => {
                    command.push_char(escaped);
                    command.word_quoted = true;
                    2
                }
                None => 1,
            },
            '\'' => {
                command.word.get_or_insert_with(String::new);
                command.word_quoted = true;
                self.stack.push(Frame::Single);
                1
            }
            '"' => {
                command.word.get_or_insert_with(String::new);
                command.word_quoted = true;
                self.stack.push(Frame::Double);
                1
            }
            '$' | '`' => self.expansion(ch, next, after, false),
            '#' if command.word.is_none() => {
                self.stack.push(Frame::Comment);
                1
            }
            '(' if command.word.is_none() && command.position == 0 && next == Some('(') => {
                self.stack.push(Frame::Arithmetic {
                    parens: 0,
                    bracket: false,
                });
                2
            }
            ' ' | '\t' => {
                self.end_word();
                1
            }
            '\n' => {
                self.end_word();
                self.separate();
                if !self.pending.is_empty() {
                    self.next_body();
                }
                1
            }
            ';' => {
                self.end_word();
                self.separate();
                let Some(command) = self.top_command_mut() else {
                    return 1;
                };
                if next == Some(';') || next == Some('&') {
                    // `;;`, `;&`, `;;&`: the next `case` pattern follows.
                    command.in_pattern = command.cases > 0;
                    return if after == Some('&') { 3 } else { 2 };
                }
                1
            }
            '&' | '|' => {
                self.end_word();
                self.separate();
                1
            }
            '<' | '>' => {
                self.end_word();
                let Some(command) = self.top_command_mut() else {
                    return 1;
                };
                if next == Some('&') || (ch == '>' && next == Some('|')) {
                    // `2>&1`, `<&3`, `>|`: a redirection, not a separator.
                    return 2;
                }
                if ch == '<' && next == Some('<') {
                    if after == Some('<') {
                        // A here-string: its word is an ordinary word.
                        return 3;
                    }
                    let strip_tabs = after == Some('-');
                    command.heredoc_operator = Some(strip_tabs);
                    return if strip_tabs { 3 } else { 2 };
                }
                1
            }
            '(' => {
                self.end_word();
                let Some(command) = self.top_command_mut() else {
                    return 1;
                };
                if !command.in_pattern {
                    command.parens += 1;
                    command.separate();
                }
                1
            }
            ')' => {
                self.end_word();
                let Some(command) = self.top_command_mut() else {
                    return 1;
                };
                if command.in_pattern {
                    command.in_pattern = false;
                    command.separate();
                } else if command.parens > 0 {
                    command.parens -= 1;
                    command.separate();
                } else if command.closer == Closer::Paren {
                    self.stack.pop();
                }
                1
            }
            _ => {
                command.push_char(ch);
                1
            }
        }
    }

    fn separate(&mut self) {
        if let Some(command) = self.top_command_mut() {
            command.separate();
        }
    }

    /// Ends the current word of the command context on top.
    fn end_word(&mut self) {
        let Some(command) = self.top_command_mut() else {
            return;
        };
        let Some(word) = command.word.take() else {
            return;
        };
        let expands = std::mem::take(&mut command.word_expands);
        let quoted = std::mem::take(&mut command.word_quoted);
        if let Some(strip_tabs) = command.heredoc_operator.take() {
            self.pending.push(HereDocument {
                delimiter: word,
                strip_tabs,
                quoted,
            });
            return;
        }
        let refused = command_word(command, &word, expands);
        for index in refused {
            if let Some(landing) = self.landings.get_mut(index) {
                *landing = Err(arithmetic_test_refusal());
            }
        }
    }

    /// A variable at the current place.
    fn variable(&mut self) {
        let index = self.landings.len();
        let landing = self.landing(index);
        self.landings.push(landing);
        if let Some(Frame::Body { line_expands, .. }) = self.stack.last_mut() {
            *line_expands = true;
        } else {
            self.command_mut().mark_expanding();
        }
    }

    fn landing(&mut self, index: usize) -> Result<Landing, Refusal> {
        if self.ambiguous {
            return Err(refusal(
                "follows a `$'...'` quote holding `\\'`, which `sh` and `bash` end in different places",
                "write the quote without `\\'` (for instance `\"'\"`), so every shell reads the command alike",
            ));
        }
        let mut in_double = false;
        let mut backquoted = false;
        for frame in &self.stack {
            match frame {
                Frame::Arithmetic { .. } => {
                    return Err(refusal(
                        "is inside shell arithmetic, which evaluates the value as an expression (bash even runs `$(...)` in an array index)",
                        "check that the value is a number, then use its environment variable: `case $BUILDIT_VALUE in ''|*[!0-9]*) exit 1;; esac; echo $((BUILDIT_VALUE + 1))`",
                    ));
                }
                Frame::Parameter(_) => {
                    return Err(refusal(
                        "is inside a parameter expansion `${...}`",
                        "use the value's environment variable there, e.g. `${TARGET:-$BUILDIT_VALUE}`",
                    ));
                }
                Frame::Body { document, .. } if document.quoted => {
                    return Err(refusal(
                        "is inside a quoted here-document, where nothing is substituted and the value would be pasted into the script",
                        "use an unquoted delimiter (`<<EOF`): BuildIt then passes the value through the environment",
                    ));
                }
                Frame::Double => in_double = true,
                Frame::Command(command) if command.closer == Closer::Backquote => {
                    if in_double || backquoted || command.nested_backquotes {
                        return Err(refusal(
                            "is inside backquotes nested in double quotes or in other backquotes, which shells quote differently",
                            "write `$(...)` instead of backquotes",
                        ));
                    }
                    backquoted = true;
                    in_double = false;
                }
                Frame::Command(_) => in_double = false,
                _ => {}
            }
        }
        let top = self.stack.last();
        let landing = match top {
            Some(Frame::Single) => Landing::SingleQuoted,
            Some(Frame::AnsiC) => Landing::AnsiCQuoted,
            Some(Frame::Double) => Landing::DoubleQuoted,
            Some(Frame::Comment) => return Ok(Landing::Comment),
            Some(Frame::Body { .. }) => return Ok(Landing::HereDocument),
            _ => Landing::Unquoted,
        };
        let command = self.command_mut();
        if command.heredoc_operator.is_some() {
            return Err(refusal(
                "is a here-document delimiter",
                "write the delimiter as plain text, e.g. `<<EOF`",
            ));
        }
        if let Some(evaluator) = &command.evaluator {
            return Err(refusal(
                &format!("is an argument of `{evaluator}`, which runs its arguments as shell code"),
                "refer to the value's environment variable inside the code instead (`eval 'echo \"$BUILDIT_VALUE\"'`): the code then reads it as data",
            ));
        }
        if let Some(shell) = &command.script {
            return Err(refusal(
                &format!("is inside the script given to `{shell} -c`, which runs it as shell code"),
                &format!(
                    "pass the value as an argument after the script: `{shell} -c 'echo \"$1\"' {shell} {{branch}}`"
                ),
            ));
        }
        if command.let_command {
            return Err(refusal(
                "is an argument of `let`, which evaluates it as arithmetic",
                "check that the value is a number, then use its environment variable: `let \"n = BUILDIT_VALUE + 1\"`",
            ));
        }
        if let Some(test) = &mut command.test {
            if test.arithmetic {
                return Err(arithmetic_test_refusal());
            }
            test.variables.push(index);
        }
        Ok(landing)
    }
}

fn arithmetic_test_refusal() -> Refusal {
    refusal(
        "is inside `[[ ... ]]` with an arithmetic comparison, which evaluates its operands as expressions (bash runs `$(...)` in an array index)",
        "compare numbers with `[ ... -eq ... ]`, which does not evaluate them",
    )
}

fn refusal(reason: &str, help: &str) -> Refusal {
    Refusal {
        reason: reason.to_owned(),
        help: help.to_owned(),
    }
}

/// Takes a finished word of a simple command into account: keywords, evaluating commands, `sh -c`, `[[ ]]`.
/// Returns the variables that an arithmetic operator in `[[ ]]` refuses after the fact.
fn command_word(command: &mut Command, word: &str, expands: bool) -> Vec<usize> {
    let mut refused = Vec::new();
    let position = command.position;
    command.position += 1;
    if command.script.take().is_some() {
        return refused;
    }
    if expands {
        command.shell_options = None;
        return refused;
    }
    if let Some(test) = &mut command.test {
        if word == "]]" {
            command.test = None;
        } else if ARITHMETIC_TESTS.contains(&word) {
            test.arithmetic = true;
            refused = std::mem::take(&mut test.variables);
        }
        return refused;
    }
    let name = word.rsplit('/').next().unwrap_or(word);
    if let Some(shell) = command.shell_options.take() {
        if std::mem::take(&mut command.shell_option_argument) {
            // The argument of `-o`: `bash -o pipefail -c ...`.
            command.shell_options = Some(shell);
            return refused;
        }
        if matches!(word, "-o" | "+o" | "-O" | "+O") {
            command.shell_option_argument = true;
            command.shell_options = Some(shell);
            return refused;
        }
        if (word.starts_with('-') || word.starts_with('+'))
            && word.len() > 1
            && !word.starts_with("--")
        {
            if word.starts_with('-') && word.contains('c') {
                command.script = Some(shell);
            } else {
                command.shell_options = Some(shell);
            }
            return refused;
        }
    }
    if EVALUATORS.contains(&name) {
        command.evaluator.get_or_insert_with(|| name.to_owned());
    }
    if SHELLS.contains(&name) {
        command.shell_options = Some(name.to_owned());
    }
    if position == 0 || command.awaiting_in {
        match word {
            "[[" if position == 0 => command.test = Some(TestExpression::default()),
            "let" if position == 0 => command.let_command = true,
            "case" if position == 0 => {
                command.cases += 1;
                command.awaiting_in = true;
            }
            "in" if command.awaiting_in => {
                command.awaiting_in = false;
                command.in_pattern = true;
            }
            "esac" => {
                command.cases = command.cases.saturating_sub(1);
                command.in_pattern = false;
            }
            _ => {}
        }
    }
    if RESERVED.contains(&word) && position == 0 {
        command.position = 0;
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The landings of the variables in `text`, where `@` stands for a variable.
    fn land(text: &str) -> Vec<Result<Landing, ()>> {
        let mut pieces = Vec::new();
        for (index, part) in text.split('@').enumerate() {
            if index > 0 {
                pieces.push(Piece::Variable);
            }
            pieces.push(Piece::Text(part));
        }
        landings(pieces)
            .into_iter()
            .map(|landing| landing.map_err(|_| ()))
            .collect()
    }

    #[test]
    fn follows_quotes_comments_and_substitutions() {
        use Landing::*;
        assert_eq!(
            land("echo @ \"@\" '@'"),
            [Ok(Unquoted), Ok(DoubleQuoted), Ok(SingleQuoted)]
        );
        // An apostrophe in a comment opens nothing.
        assert_eq!(land("true # it's\necho @"), [Ok(Unquoted)]);
        // `#` inside a word is not a comment.
        assert_eq!(land("echo a#'@'"), [Ok(SingleQuoted)]);
        assert_eq!(
            land("echo \"$(echo @ \"@\")\""),
            [Ok(Unquoted), Ok(DoubleQuoted)]
        );
        // A `case` pattern's `)` does not close `$(`.
        assert_eq!(
            land("echo \"$(case x in x) echo;; esac) @\""),
            [Ok(DoubleQuoted)]
        );
        // Redirections are not separators; `bash -o pipefail -c` still takes a script.
        assert_eq!(land("eval true 2>&1 @"), [Err(())]);
        assert_eq!(land("bash -o pipefail -c @"), [Err(())]);
        assert_eq!(land("bash script.sh -c @"), [Ok(Unquoted)]);
        // A new command after `;` does not inherit `eval`.
        assert_eq!(land("eval true; echo @"), [Ok(Unquoted)]);
    }

    #[test]
    fn here_documents_end_at_their_delimiter() {
        use Landing::*;
        assert_eq!(
            land("cat <<A <<'B'\n@\nA\n@\nB\necho @"),
            [Ok(HereDocument), Err(()), Ok(Unquoted)]
        );
        // A line holding a variable never ends the document, whatever the value.
        assert_eq!(
            land("cat <<EOF\n@\nEOF\n@"),
            [Ok(HereDocument), Ok(Unquoted)]
        );
        assert_eq!(
            land("cat <<-EOF\n\t@\n\tEOF\n'@'"),
            [Ok(HereDocument), Ok(SingleQuoted)]
        );
    }

    #[test]
    fn arithmetic_tests_refuse_their_operands_after_the_fact() {
        use Landing::*;
        assert_eq!(land("[[ @ -eq 1 ]] && echo @"), [Err(()), Ok(Unquoted)]);
        assert_eq!(land("[[ @ == x ]]"), [Ok(Unquoted)]);
    }
}
