//! `{variable}` templates in pipeline strings: parsing with precise problems, and rendering with shell quoting.

use std::borrow::Cow;

use serde::{Serialize, Serializer};

use super::shell::{Analysis, Piece, Refusal};

/// A value a template can refer to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Variable {
    /// `{git.sha}`
    GitSha,
    /// `{git.short-sha}`
    GitShortSha,
    /// `{git.branch}` or `{branch}`
    GitBranch,
    /// `{git.tag}`
    GitTag,
    /// `{git.ref}`
    GitRef,
    /// `{event}`
    Event,
    /// `{pipeline.name}`
    PipelineName,
    /// `{run.id}`
    RunId,
    /// `{run.number}`
    RunNumber,
    /// `{stage.name}`
    StageName,
    /// `{matrix.AXIS}`
    Matrix(String),
    /// `{env.NAME}`
    Env(String),
    /// `{hash:GLOB}`: sha256 over the matching files (cache keys only).
    Hash(String),
    /// `{needs.STAGE.outputs.NAME}`: an output a needed stage wrote (in `run` and a stage's `env`).
    Output {
        /// The stage that writes it.
        stage: String,
        /// The output's name.
        name: String,
    },
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    /// Text taken as it is (with `{{`/`}}` already turned into single braces).
    Literal(String),
    /// A variable, with its byte range in the template text.
    Variable {
        /// What it refers to.
        variable: Variable,
        /// Where `{...}` sits in the template text.
        range: std::ops::Range<usize>,
    },
}

/// A string with `{variable}` references, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    parts: Vec<TemplatePart>,
}

/// What a template may refer to where it appears.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TemplateScope<'a> {
    /// Matrix axes in scope; `None` where `{matrix.*}` is not available at all, `Some(&[])` for "any axis"
    /// checks that happen later (cache keys, checked against each stage that uses the cache).
    pub(crate) matrix_axes: Option<&'a [String]>,
    /// `{matrix.*}` is accepted with any axis; checked later.
    pub(crate) any_matrix_axis: bool,
    /// `{hash:GLOB}` is accepted (cache keys).
    pub(crate) allow_hash: bool,
    /// Only `{env.NAME}` is accepted (the system configuration).
    pub(crate) env_only: bool,
    /// Only what is known before the run starts is accepted (a concurrency group): not `{run.*}`, not
    /// `{needs.*}`.
    pub(crate) before_run: bool,
    /// Outside any stage (the pipeline's concurrency group): `{stage.name}` has no value.
    pub(crate) no_stage: bool,
}

/// Why a `{...}` reference is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TemplateProblemKind {
    /// Not a known variable.
    Unknown,
    /// A known variable with an invalid argument (`{hash:[}`).
    Invalid,
    /// `{secrets.X}`.
    Secret(String),
}

/// A problem with one reference in a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateProblem {
    pub(crate) kind: TemplateProblemKind,
    /// Byte range of `{...}` in the template text.
    pub(crate) range: std::ops::Range<usize>,
    pub(crate) message: String,
    pub(crate) help: Option<String>,
}

const ROOTS: [&str; 11] = [
    "git", "branch", "event", "pipeline", "run", "stage", "matrix", "env", "secrets", "hash",
    "needs",
];
const GIT_MEMBERS: [&str; 5] = ["sha", "short-sha", "branch", "tag", "ref"];

impl Template {
    /// A template with no variables.
    pub fn literal(text: impl Into<String>) -> Self {
        let text = text.into();
        Self {
            parts: vec![TemplatePart::Literal(text.clone())],
            text,
        }
    }

    /// Parses `text`; references not allowed in `scope` are returned as problems (and kept as literals).
    pub(crate) fn parse(text: &str, scope: TemplateScope<'_>) -> (Self, Vec<TemplateProblem>) {
        let mut parts = Vec::new();
        let mut problems = Vec::new();
        let mut literal = String::new();
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'{' if bytes.get(i + 1) == Some(&b'{') => {
                    literal.push('{');
                    i += 2;
                }
                b'}' if bytes.get(i + 1) == Some(&b'}') => {
                    literal.push('}');
                    i += 2;
                }
                b'$' if bytes.get(i + 1) == Some(&b'{') => {
                    // `${...}` belongs to the shell: copy it through to its matching brace.
                    let end = matching_brace(bytes, i + 1).map_or(bytes.len(), |close| close + 1);
                    literal.push_str(&text[i..end]);
                    i = end;
                }
                b'{' => {
                    let close = text[i + 1..].find('}').map(|offset| i + 1 + offset);
                    let content = close.map(|close| &text[i + 1..close]);
                    match (close, content) {
                        (Some(close), Some(content)) if is_reference(content) => {
                            let range = i..close + 1;
                            match resolve(content, scope) {
                                Ok(variable) => {
                                    if !literal.is_empty() {
                                        parts.push(TemplatePart::Literal(std::mem::take(
                                            &mut literal,
                                        )));
                                    }
                                    parts.push(TemplatePart::Variable { variable, range });
                                }
                                Err((kind, message, help)) => {
                                    literal.push_str(&text[range.clone()]);
                                    problems.push(TemplateProblem {
                                        kind,
                                        range,
                                        message,
                                        help,
                                    });
                                }
                            }
                            i = close + 1;
                        }
                        _ => {
                            literal.push('{');
                            i += 1;
                        }
                    }
                }
                _ => {
                    // Copy a whole UTF-8 character.
                    let ch_len = text[i..].chars().next().map_or(1, char::len_utf8);
                    literal.push_str(&text[i..i + ch_len]);
                    i += ch_len;
                }
            }
        }
        if !literal.is_empty() || parts.is_empty() {
            parts.push(TemplatePart::Literal(literal));
        }
        (
            Self {
                text: text.to_owned(),
                parts,
            },
            problems,
        )
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Its pieces.
    pub fn parts(&self) -> &[TemplatePart] {
        &self.parts
    }

    /// The variables it refers to.
    pub fn variables(&self) -> impl Iterator<Item = (&Variable, &std::ops::Range<usize>)> {
        self.parts.iter().filter_map(|part| match part {
            TemplatePart::Variable { variable, range } => Some((variable, range)),
            TemplatePart::Literal(_) => None,
        })
    }

    /// Whether it holds no variables at all.
    pub fn is_literal(&self) -> bool {
        self.variables().next().is_none()
    }

    /// Renders the template with the values `lookup` gives. Variables that `lookup` cannot resolve stay as
    /// written (`{run.id}`), so a plan shown before a run still reads well. For text that is not a shell
    /// command: `run` commands go through [`Template::render_command`].
    pub fn render<'v>(&self, lookup: impl Fn(&Variable) -> Option<Cow<'v, str>>) -> String {
        let mut out = String::with_capacity(self.text.len());
        for part in &self.parts {
            match part {
                TemplatePart::Literal(text) => out.push_str(text),
                TemplatePart::Variable { variable, range } => match lookup(variable) {
                    Some(value) => out.push_str(&value),
                    None => out.push_str(&self.text[range.clone()]),
                },
            }
        }
        out
    }

    /// The template read as a POSIX shell command: where each variable lands (in the order of
    /// [`Template::variables`]), and what the command leaves open at its end.
    pub fn shell_analysis(&self) -> Analysis {
        self.shell_analysis_in_stage(false)
    }

    /// The same, for a command of a stage where another command declared a variable with an attribute
    /// (`declare -i n`), which makes assignments to it arithmetic.
    pub fn shell_analysis_in_stage(&self, attributes_declared: bool) -> Analysis {
        super::shell::analyse(
            self.parts.iter().map(|part| match part {
                TemplatePart::Literal(text) => Piece::Text(text),
                TemplatePart::Variable { .. } => Piece::Variable,
            }),
            attributes_declared,
        )
    }

    /// The shell word that prints the command as the log shows it (`"$ git checkout ${BUILDIT_BRANCH}"`):
    /// the values come from the environment, like the command's own, so the echo never holds one either.
    pub fn echo_word(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 8);
        out.push_str("\"$ ");
        for part in &self.parts {
            match part {
                TemplatePart::Literal(text) => {
                    for ch in text.chars() {
                        if matches!(ch, '\\' | '"' | '$' | '`') {
                            out.push('\\');
                        }
                        out.push(ch);
                    }
                }
                TemplatePart::Variable { variable, .. } => match variable.env_name() {
                    Some(name) => out.push_str(&format!("${{{name}}}")),
                    None => out.push('?'),
                },
            }
        }
        out.push('"');
        out
    }

    /// Renders a `run` command: each variable becomes a reference to the environment variable that carries its
    /// value ([`Variable::env_name`]), written for the place it lands in, so that no value ever becomes shell
    /// syntax, whatever it holds (the script-injection hole other CI systems have). The caller sets those
    /// variables. A variable where no reference is literal (arithmetic, a quoted here-document, `eval`) is an
    /// error; validation reports it first.
    pub fn render_command(&self) -> Result<String, CommandRefusal> {
        if self.is_literal() {
            return Ok(self.text.clone());
        }
        let mut landings = self.shell_analysis().landings.into_iter();
        let mut out = String::with_capacity(self.text.len() + 16);
        for part in &self.parts {
            match part {
                TemplatePart::Literal(text) => out.push_str(text),
                TemplatePart::Variable { variable, range } => {
                    let refused = |refusal: Refusal| CommandRefusal {
                        variable: self.text.get(range.clone()).unwrap_or_default().to_owned(),
                        refusal,
                    };
                    let landing = landings.next().unwrap_or_else(|| {
                        Err(Refusal {
                            reason: "was not found by the shell reader".to_owned(),
                            help: String::new(),
                        })
                    });
                    let landing = landing.map_err(refused)?;
                    let Some(name) = variable.env_name() else {
                        return Err(refused(Refusal {
                            reason: "has no value in a command".to_owned(),
                            help: "use it where it is available".to_owned(),
                        }));
                    };
                    out.push_str(&landing.reference(&name));
                }
            }
        }
        Ok(out)
    }
}

/// A variable of a `run` command that cannot be substituted where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRefusal {
    /// The reference as written, e.g. `{branch}`.
    pub variable: String,
    /// Why, and what to write instead.
    pub refusal: Refusal,
}

impl std::fmt::Display for CommandRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` {}", self.variable, self.refusal.reason)
    }
}

impl Variable {
    /// The environment variable that carries this variable's value into `run` commands (`BUILDIT_BRANCH` for
    /// `{branch}`); `None` for `{hash:GLOB}`, which only cache keys use.
    pub fn env_name(&self) -> Option<String> {
        let fixed = match self {
            Self::GitSha => "BUILDIT_SHA",
            Self::GitShortSha => "BUILDIT_SHORT_SHA",
            Self::GitBranch => "BUILDIT_BRANCH",
            Self::GitTag => "BUILDIT_TAG",
            Self::GitRef => "BUILDIT_REF",
            Self::Event => "BUILDIT_EVENT",
            Self::PipelineName => "BUILDIT_PIPELINE",
            Self::RunId => "BUILDIT_RUN_ID",
            Self::RunNumber => "BUILDIT_RUN_NUMBER",
            Self::StageName => "BUILDIT_STAGE_NAME",
            Self::Matrix(axis) => return Some(matrix_env_name(axis)),
            Self::Env(name) => return Some(format!("BUILDIT_ENV_{name}")),
            Self::Output { stage, name } => return Some(output_env_name(stage, name)),
            Self::Hash(_) => return None,
        };
        Some(fixed.to_owned())
    }
}

/// `BUILDIT_NEEDS_<STAGE>_OUTPUTS_<NAME>`: upper-cased, every character but a letter or digit written `_`, as
/// the variable `{needs.STAGE.outputs.NAME}` reaches a command.
pub fn output_env_name(stage: &str, name: &str) -> String {
    format!(
        "BUILDIT_NEEDS_{}_OUTPUTS_{}",
        env_word(stage),
        env_word(name)
    )
}

/// `BUILDIT_MATRIX_<AXIS>`: the axis upper-cased, every character but a letter or digit written `_`.
pub fn matrix_env_name(axis: &str) -> String {
    format!("BUILDIT_MATRIX_{}", env_word(axis))
}

/// `text` as part of an environment variable's name: upper-cased, every character but a letter or digit `_`.
fn env_word(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

/// Quotes `value` for a POSIX shell unless it is made only of characters that are always safe.
pub fn quote_for_shell(value: &str) -> Cow<'_, str> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_./:@%+=,-".contains(c);
    if !value.is_empty() && value.chars().all(safe) {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(format!("'{}'", value.replace('\'', r"'\''")))
    }
}

/// The byte ranges of known `{variable}` references written inside a shell parameter expansion (`${X:-{branch}}`).
/// The expansion belongs to the shell and is kept as written, so such a reference would never be substituted:
/// `run` commands report them.
pub(crate) fn references_in_parameter_expansions(
    text: &str,
    scope: TemplateScope<'_>,
) -> Vec<std::ops::Range<usize>> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match (bytes.get(i), bytes.get(i + 1)) {
            (Some(b'{'), Some(b'{')) | (Some(b'}'), Some(b'}')) => i += 2,
            (Some(b'$'), Some(b'{')) => {
                let end = matching_brace(bytes, i + 1).unwrap_or(bytes.len());
                // Each `{` without a `}` before the next `{` opens nothing: one pass, however many braces.
                let mut open = None;
                for j in i + 2..end {
                    match bytes.get(j) {
                        Some(b'{') => open = Some(j),
                        Some(b'}') => {
                            if let Some(start) = open.take() {
                                let content = text.get(start + 1..j).unwrap_or_default();
                                if is_reference(content) && resolve(content, scope).is_ok() {
                                    found.push(start..j + 1);
                                }
                            }
                        }
                        _ => {}
                    }
                }
                i = end + 1;
            }
            _ => i += 1,
        }
    }
    found
}

/// The index of the `}` that closes the `{` at `open`, counting nested braces.
fn matching_brace(bytes: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (index, &byte) in bytes.iter().enumerate().skip(open) {
        match byte {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(index);
                }
            }
            _ => {}
        }
    }
    None
}

/// Whether `{content}` is meant as a reference: a dotted name (`git.sha`, `branch`) or `hash:GLOB`.
/// Anything else (`{print $1}`, `{}`, `{a,b}`) belongs to the shell and is left alone.
fn is_reference(content: &str) -> bool {
    if let Some(glob) = content.strip_prefix("hash:") {
        return !glob.is_empty() && !glob.contains(char::is_whitespace);
    }
    let mut segments = content.split('.');
    let first_ok = segments.next().is_some_and(|first| {
        first
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && first
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    first_ok
        && segments.all(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

type Resolution = Result<Variable, (TemplateProblemKind, String, Option<String>)>;

fn resolve(content: &str, scope: TemplateScope<'_>) -> Resolution {
    let unknown =
        |message: String, help: Option<String>| Err((TemplateProblemKind::Unknown, message, help));
    if let Some(glob) = content.strip_prefix("hash:") {
        if scope.allow_hash {
            let escapes = glob.starts_with('/') || glob.split('/').any(|part| part == "..");
            return match super::glob::Glob::new(glob) {
                Ok(_) if !escapes => Ok(Variable::Hash(glob.to_owned())),
                Ok(_) => Err((
                    TemplateProblemKind::Invalid,
                    format!("`{{{content}}}` looks outside the workspace"),
                    Some("`{hash:GLOB}` hashes files in the workspace: use a relative pattern without `..`".into()),
                )),
                Err(problem) => Err((
                    TemplateProblemKind::Invalid,
                    format!("invalid pattern in `{{{content}}}`: {problem}"),
                    Some("write a glob such as `{hash:Cargo.lock}` or `{hash:**/package-lock.json}`".into()),
                )),
            };
        }
        return unknown(
            format!("`{{{content}}}` is only available in cache keys"),
            Some("use `{hash:GLOB}` inside a cache's `key`".into()),
        );
    }
    let (root, member) = match content.split_once('.') {
        Some((root, member)) => (root, Some(member)),
        None => (content, None),
    };
    if root == "secrets" && scope.env_only {
        return Err((
            TemplateProblemKind::Secret(member.unwrap_or("NAME").to_owned()),
            format!("secrets cannot be interpolated: `{{{content}}}`"),
            Some("use `{env.NAME}` and set the variable in the runner's environment".into()),
        ));
    }
    if root == "secrets" {
        let name = member.unwrap_or("NAME");
        return Err((
            TemplateProblemKind::Secret(name.to_owned()),
            format!("secrets cannot be interpolated: `{{{content}}}`"),
            Some(format!(
                "add `secrets \"{name}\"` to the stage and use it as the environment variable `${name}`; interpolation would put the secret into command lines and logs"
            )),
        ));
    }
    if scope.env_only && root != "env" {
        return unknown(
            format!("unknown variable `{{{content}}}`: only `{{env.NAME}}` is available here"),
            None,
        );
    }
    let member_error = |members: &[&str], member: Option<&str>| {
        let help = match member.and_then(|m| crate::suggest::closest(m, members.iter().copied())) {
            Some(closest) => format!("did you mean `{{{root}.{closest}}}`?"),
            None => {
                let listed: Vec<String> = members
                    .iter()
                    .map(|m| format!("`{{{root}.{m}}}`"))
                    .collect();
                format!("available: {}", listed.join(", "))
            }
        };
        unknown(format!("unknown variable `{{{content}}}`"), Some(help))
    };
    let not_before_run = || {
        unknown(
            format!("`{{{content}}}` is not known before the run starts"),
            Some("a concurrency group is decided before the run starts: use `{git.branch}`, `{git.ref}`, `{event}`, `{pipeline.name}`, `{env.NAME}` or, on a stage, `{stage.name}` and `{matrix.AXIS}`".into()),
        )
    };
    match (root, member) {
        ("run" | "needs", _) if scope.before_run => not_before_run(),
        ("stage", Some("name")) if scope.no_stage => unknown(
            format!("`{{{content}}}` is used outside a stage"),
            Some("`{stage.name}` is available in a stage's own values; the pipeline's group belongs to no stage".into()),
        ),
        ("git", Some("sha")) => Ok(Variable::GitSha),
        ("git", Some("short-sha")) => Ok(Variable::GitShortSha),
        ("git", Some("branch")) | ("branch", None) => Ok(Variable::GitBranch),
        ("git", Some("tag")) => Ok(Variable::GitTag),
        ("git", Some("ref")) => Ok(Variable::GitRef),
        ("git", member) => member_error(&GIT_MEMBERS, member),
        ("event", None) => Ok(Variable::Event),
        ("pipeline", Some("name")) => Ok(Variable::PipelineName),
        ("pipeline", member) => member_error(&["name"], member),
        ("run", Some("id")) => Ok(Variable::RunId),
        ("run", Some("number")) => Ok(Variable::RunNumber),
        ("run", member) => member_error(&["id", "number"], member),
        ("stage", Some("name")) => Ok(Variable::StageName),
        ("stage", member) => member_error(&["name"], member),
        ("env", Some(name)) if is_env_name(name) => Ok(Variable::Env(name.to_owned())),
        ("env", _) => unknown(
            format!("unknown variable `{{{content}}}`"),
            Some("write `{env.NAME}` with NAME made of letters, digits and `_`".into()),
        ),
        ("needs", member) => match member.and_then(|member| member.rsplit_once(".outputs.")) {
            Some((stage, name)) if !stage.is_empty() && is_env_name(name) => Ok(Variable::Output {
                stage: stage.to_owned(),
                name: name.to_owned(),
            }),
            _ => unknown(
                format!("unknown variable `{{{content}}}`"),
                Some(
                    "write `{needs.STAGE.outputs.NAME}` for an output of a stage this one needs"
                        .into(),
                ),
            ),
        },
        ("matrix", Some(axis)) if !axis.contains('.') => match scope.matrix_axes {
            _ if scope.any_matrix_axis => Ok(Variable::Matrix(axis.to_owned())),
            Some(axes) if axes.iter().any(|a| a == axis) => Ok(Variable::Matrix(axis.to_owned())),
            Some(axes) if !axes.is_empty() => unknown(
                format!("unknown matrix axis in `{{{content}}}`"),
                crate::suggest::closest(axis, axes.iter().map(String::as_str))
                    .map(|closest| format!("did you mean `{{matrix.{closest}}}`?"))
                    .or_else(|| Some(format!("the stage's matrix axes are: {}", axes.join(", ")))),
            ),
            _ => unknown(
                format!("`{{{content}}}` is used where there is no matrix"),
                Some("`{matrix.AXIS}` is available in stages that declare a `matrix`".into()),
            ),
        },
        _ => {
            let known = [
                "git.sha",
                "git.short-sha",
                "git.branch",
                "git.tag",
                "git.ref",
                "branch",
                "event",
                "pipeline.name",
                "run.id",
                "run.number",
                "stage.name",
            ];
            let help = crate::suggest::closest(content, known)
                .or_else(|| crate::suggest::closest(root, ROOTS))
                .map(|closest| format!("did you mean `{{{closest}}}`?"))
                .or(Some("write `{{` and `}}` for literal braces".into()));
            unknown(format!("unknown variable `{{{content}}}`"), help)
        }
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`: a name a shell accepts as an environment variable.
pub(crate) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Template, Vec<TemplateProblem>) {
        Template::parse(text, TemplateScope::default())
    }

    fn render(template: &Template) -> String {
        template.render(|variable| match variable {
            Variable::GitBranch => Some(Cow::Borrowed("x;rm -rf ~")),
            Variable::GitSha => Some(Cow::Borrowed("abc123")),
            _ => None,
        })
    }

    #[test]
    fn leaves_shell_syntax_alone() {
        for text in [
            "awk '{print $1}'",
            "echo ${HOME} ${X:-{y}}",
            "find . -exec rm {} \\;",
            "echo {a,b}",
            "{a..b}",
        ] {
            let (template, problems) = parse(text);
            assert!(problems.is_empty(), "{text}: {problems:?}");
            assert!(template.is_literal(), "{text}");
            assert_eq!(render(&template), text);
            assert_eq!(template.render_command().as_deref(), Ok(text));
        }
    }

    #[test]
    fn doubled_braces_are_literal() {
        let (template, problems) = parse("{{git.sha}} }}");
        assert!(problems.is_empty());
        assert_eq!(render(&template), "{git.sha} }");
    }

    #[test]
    fn commands_refer_to_values_through_the_environment() {
        let command = |text: &str| {
            let (template, problems) = parse(text);
            assert!(problems.is_empty(), "{text}: {problems:?}");
            template.render_command()
        };
        assert_eq!(
            command("git checkout {branch} && echo {git.sha}").as_deref(),
            Ok(r#"git checkout "${BUILDIT_BRANCH}" && echo "${BUILDIT_SHA}""#)
        );
        assert_eq!(
            command("echo \"building {branch}\"").as_deref(),
            Ok(r#"echo "building ${BUILDIT_BRANCH}""#)
        );
        assert_eq!(
            command("echo 'on {branch}'").as_deref(),
            Ok(r#"echo 'on '"${BUILDIT_BRANCH}"''"#)
        );
        assert_eq!(
            command("echo \"$(echo {branch})\"").as_deref(),
            Ok(r#"echo "$(echo "${BUILDIT_BRANCH}")""#)
        );
        assert_eq!(
            command("cat <<EOF\n{branch}\nEOF\necho {branch}").as_deref(),
            Ok("cat <<EOF\n${BUILDIT_BRANCH}\nEOF\necho \"${BUILDIT_BRANCH}\"")
        );
        // Escaped quotes do not open a quote; a comment's apostrophe neither.
        assert_eq!(
            command("echo \\\" {branch} # don't\necho {branch}").as_deref(),
            Ok("echo \\\" \"${BUILDIT_BRANCH}\" # don't\necho \"${BUILDIT_BRANCH}\"")
        );
        let refused = command("echo $(( {branch} + 1 ))").map_err(|refusal| refusal.variable);
        assert_eq!(refused, Err("{branch}".to_owned()));
        assert!(command("cat <<'EOF'\n{branch}\nEOF").is_err());
        assert!(command("eval echo {branch}").is_err());
        assert!(command("sh -c 'echo {branch}'").is_err());
        assert!(command("sh -c 'echo \"$1\"' sh {branch}").is_ok());
        assert!(command("[[ {branch} -eq 1 ]]").is_err());
        assert!(command("[[ {branch} == main ]]").is_ok());
    }

    #[test]
    fn unresolved_variables_stay_as_written() {
        let (template, _) = parse("id={run.id}");
        assert_eq!(render(&template), "id={run.id}");
    }

    #[test]
    fn reports_unknown_and_secret_references() {
        let (_, problems) = parse("echo {git.shaa} {foo.bar} {secrets.TOKEN}");
        assert_eq!(problems.len(), 3);
        assert_eq!(problems[0].range, 5..15);
        assert_eq!(
            problems[0].help.as_deref(),
            Some("did you mean `{git.sha}`?")
        );
        assert_eq!(
            problems[2].kind,
            TemplateProblemKind::Secret("TOKEN".into())
        );
    }

    #[test]
    fn matrix_axes_are_checked_against_the_scope() {
        let axes = vec!["rust".to_owned()];
        let scope = TemplateScope {
            matrix_axes: Some(&axes),
            ..TemplateScope::default()
        };
        assert!(Template::parse("{matrix.rust}", scope).1.is_empty());
        let (_, problems) = Template::parse("{matrix.rsut}", scope);
        assert_eq!(
            problems[0].help.as_deref(),
            Some("did you mean `{matrix.rust}`?")
        );
        assert_eq!(parse("{matrix.rust}").1.len(), 1);
    }

    #[test]
    fn hash_only_where_allowed() {
        assert_eq!(parse("{hash:Cargo.lock}").1.len(), 1);
        let scope = TemplateScope {
            allow_hash: true,
            ..TemplateScope::default()
        };
        assert!(
            Template::parse("cargo-{hash:Cargo.lock}", scope)
                .1
                .is_empty()
        );
    }
}
