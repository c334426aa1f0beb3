//! The `${…}` interpolation language: parsing a TOML string into literal
//! parts and expressions (references, function calls, literals, list and
//! map literals, indexing `a[i]`/`a.key`, `!`, comparisons, `&&`/`||` and
//! conditionals `c ? a : b`). Spans are absolute byte offsets in the
//! template file, so evaluation errors point at the exact reference.

use super::diagnostic::Span;

/// A TOML string split into literal text and `${…}` expressions.
#[derive(Debug, Clone, PartialEq)]
pub struct Interpolated {
    pub parts: Vec<Part>,
    /// Span of the whole TOML value.
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Lit(String),
    Expr(Expr),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// `var.name`, `local.x`, `image.version`, …
    Ref(Vec<String>),
    /// `upper(var.x)`
    Call(String, Vec<Expr>),
    Str(String),
    Num(f64),
    Bool(bool),
    /// `[a, b]`
    List(Vec<Expr>),
    /// `{ key = value, "other key" = value }` (`:` works too)
    Map(Vec<(String, Expr)>),
    /// `list[0]`, `map["key"]`
    Index(Box<Expr>, Box<Expr>),
    /// `expr.key` after a call or an index (`merge(a, b).key`)
    Attr(Box<Expr>, String),
    /// `!expr`
    Not(Box<Expr>),
    /// `a == b`, `a && b`, …
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `cond ? then : else`
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    /// Stands in for a string whose `${…}` did not parse (already reported);
    /// evaluates to an unknown value so it causes no follow-on errors.
    Invalid,
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }
}

/// A syntax error inside a string.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub span: Span,
    pub message: String,
}

impl Interpolated {
    /// A literal with no expressions.
    pub fn literal(text: &str, span: Span) -> Self {
        Interpolated {
            parts: vec![Part::Lit(text.to_string())],
            span,
        }
    }

    /// The single expression when the string is exactly `"${expr}"`; such a
    /// string evaluates to the expression's value with its own type.
    pub fn single_expr(&self) -> Option<&Expr> {
        match self.parts.as_slice() {
            [Part::Expr(e)] => Some(e),
            _ => None,
        }
    }

    /// A string whose syntax error was already reported.
    pub fn invalid(span: Span) -> Self {
        Interpolated {
            parts: vec![Part::Expr(Expr {
                kind: ExprKind::Invalid,
                span: span.clone(),
            })],
            span,
        }
    }

    /// The text when there is no expression at all.
    pub fn as_literal(&self) -> Option<String> {
        let mut s = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(l) => s.push_str(l),
                Part::Expr(_) => return None,
            }
        }
        Some(s)
    }

    /// Every reference in the string (for dependency analysis).
    pub fn refs(&self) -> Vec<(&[String], &Span)> {
        fn walk<'a>(e: &'a Expr, out: &mut Vec<(&'a [String], &'a Span)>) {
            match &e.kind {
                ExprKind::Ref(path) => out.push((path, &e.span)),
                ExprKind::Call(_, args) | ExprKind::List(args) => {
                    args.iter().for_each(|a| walk(a, out))
                }
                ExprKind::Map(items) => items.iter().for_each(|(_, a)| walk(a, out)),
                ExprKind::Index(a, b) | ExprKind::Binary(_, a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
                ExprKind::Attr(a, _) | ExprKind::Not(a) => walk(a, out),
                ExprKind::Cond(c, a, b) => {
                    walk(c, out);
                    walk(a, out);
                    walk(b, out);
                }
                ExprKind::Str(_) | ExprKind::Num(_) | ExprKind::Bool(_) | ExprKind::Invalid => {}
            }
        }
        let mut out = vec![];
        for p in &self.parts {
            if let Part::Expr(e) = p {
                walk(e, &mut out);
            }
        }
        out
    }
}

/// Parses `text` (the value of a TOML string). `offset_of(i)` maps a byte
/// index in `text` to a byte offset in the file; when the string's escapes
/// make that impossible, it returns the start of the value instead.
pub fn parse(
    text: &str,
    span: Span,
    offset_of: &dyn Fn(usize) -> usize,
) -> Result<Interpolated, SyntaxError> {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with("$${") {
            lit.push_str("${");
            i += 3;
        } else if text[i..].starts_with("${") {
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            let mut p = ExprParser {
                text,
                pos: i + 2,
                offset_of,
            };
            p.skip_ws();
            if p.peek() == Some('}') {
                return Err(p.error(i, "empty interpolation `${}`"));
            }
            let expr = p.expr()?;
            p.skip_ws();
            match p.peek() {
                Some('}') => p.pos += 1,
                Some(c) => {
                    return Err(
                        p.error(p.pos, &format!("expected `}}` to close `${{`, found `{c}`"))
                    )
                }
                None => return Err(p.error(i, "unclosed `${`: expected `}`")),
            }
            parts.push(Part::Expr(expr));
            i = p.pos;
        } else {
            let c = text[i..].chars().next().expect("in bounds");
            lit.push(c);
            i += c.len_utf8();
        }
        let _ = bytes;
    }
    if !lit.is_empty() || parts.is_empty() {
        parts.push(Part::Lit(lit));
    }
    Ok(Interpolated { parts, span })
}

struct ExprParser<'a> {
    text: &'a str,
    pos: usize,
    offset_of: &'a dyn Fn(usize) -> usize,
}

impl ExprParser<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
    }

    fn span(&self, from: usize, to: usize) -> Span {
        let a = (self.offset_of)(from);
        let b = (self.offset_of)(to);
        if b > a {
            a..b
        } else {
            a..a + 1
        }
    }

    fn error(&self, at: usize, message: &str) -> SyntaxError {
        let end = (at + 1).min(self.text.len()).max(at);
        SyntaxError {
            span: self.span(at, end),
            message: message.to_string(),
        }
    }

    /// `or ? expr : expr`, the lowest precedence.
    fn expr(&mut self) -> Result<Expr, SyntaxError> {
        self.skip_ws();
        let start = self.pos;
        let cond = self.binary(0)?;
        self.skip_ws();
        if self.peek() != Some('?') {
            return Ok(cond);
        }
        self.pos += 1;
        let then = self.expr()?;
        self.skip_ws();
        if self.peek() != Some(':') {
            return Err(self.error(
                self.pos.min(self.text.len().saturating_sub(1)),
                "expected `:` in the conditional `cond ? a : b`",
            ));
        }
        self.pos += 1;
        let otherwise = self.expr()?;
        Ok(Expr {
            span: self.span(start, self.pos),
            kind: ExprKind::Cond(Box::new(cond), Box::new(then), Box::new(otherwise)),
        })
    }

    /// The operator at the cursor of precedence `level` (0: `||`, 1: `&&`,
    /// 2: comparisons), with its length.
    fn operator(&self, level: u8) -> Option<(BinOp, usize)> {
        let rest = &self.text[self.pos..];
        let ops: &[(&str, BinOp)] = match level {
            0 => &[("||", BinOp::Or)],
            1 => &[("&&", BinOp::And)],
            _ => &[
                ("==", BinOp::Eq),
                ("!=", BinOp::Ne),
                ("<=", BinOp::Le),
                (">=", BinOp::Ge),
                ("<", BinOp::Lt),
                (">", BinOp::Gt),
            ],
        };
        ops.iter()
            .find(|(sym, _)| rest.starts_with(sym))
            .map(|(sym, op)| (*op, sym.len()))
    }

    /// Left-associative binary operators, `||` binding loosest.
    fn binary(&mut self, level: u8) -> Result<Expr, SyntaxError> {
        self.skip_ws();
        let start = self.pos;
        let mut lhs = if level == 2 {
            self.unary()?
        } else {
            self.binary(level + 1)?
        };
        loop {
            self.skip_ws();
            let Some((op, len)) = self.operator(level) else {
                return Ok(lhs);
            };
            self.pos += len;
            let rhs = if level == 2 {
                self.unary()?
            } else {
                self.binary(level + 1)?
            };
            lhs = Expr {
                span: self.span(start, self.pos),
                kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
            };
            if level == 2 {
                // Comparisons do not chain (`a < b < c` is a mistake).
                self.skip_ws();
                if self.operator(2).is_some() {
                    return Err(self.error(self.pos, "comparisons do not chain: use `&&`"));
                }
                return Ok(lhs);
            }
        }
    }

    /// `!x` or a postfix expression.
    fn unary(&mut self) -> Result<Expr, SyntaxError> {
        self.skip_ws();
        let start = self.pos;
        if self.peek() == Some('!') && !self.text[self.pos..].starts_with("!=") {
            self.pos += 1;
            let inner = self.unary()?;
            return Ok(Expr {
                span: self.span(start, self.pos),
                kind: ExprKind::Not(Box::new(inner)),
            });
        }
        let mut e = self.primary()?;
        loop {
            match self.peek() {
                Some('[') => {
                    self.pos += 1;
                    let index = self.expr()?;
                    self.skip_ws();
                    if self.peek() != Some(']') {
                        return Err(self.error(
                            self.pos.min(self.text.len().saturating_sub(1)),
                            "expected `]` to close the index",
                        ));
                    }
                    self.pos += 1;
                    e = Expr {
                        span: self.span(start, self.pos),
                        kind: ExprKind::Index(Box::new(e), Box::new(index)),
                    };
                }
                Some('.') if !matches!(e.kind, ExprKind::Ref(_)) => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c) if c.is_alphanumeric() || c == '_' => {
                            let key = self.ident();
                            e = Expr {
                                span: self.span(start, self.pos),
                                kind: ExprKind::Attr(Box::new(e), key),
                            };
                        }
                        _ => return Err(self.error(self.pos, "expected a name after `.`")),
                    }
                }
                _ => return Ok(e),
            }
        }
    }

    /// `[a, b]` or `{ k = v, … }`.
    fn collection(&mut self, close: char) -> Result<Expr, SyntaxError> {
        let start = self.pos;
        self.pos += 1;
        let (mut items, mut pairs) = (vec![], vec![]);
        loop {
            self.skip_ws();
            if self.peek() == Some(close) {
                self.pos += 1;
                break;
            }
            if close == ']' {
                items.push(self.expr()?);
            } else {
                let key = match self.peek() {
                    Some('"') => match self.string_lit()?.kind {
                        ExprKind::Str(k) => k,
                        _ => unreachable!("string_lit returns a string"),
                    },
                    Some(c) if c.is_alphanumeric() || c == '_' => self.ident(),
                    _ => {
                        return Err(self.error(
                            self.pos.min(self.text.len().saturating_sub(1)),
                            "expected a key (a name or a string) in the map",
                        ))
                    }
                };
                self.skip_ws();
                match self.peek() {
                    Some('=') | Some(':') => self.pos += 1,
                    _ => {
                        return Err(self.error(
                            self.pos.min(self.text.len().saturating_sub(1)),
                            &format!("expected `=` after the map key `{key}`"),
                        ))
                    }
                }
                pairs.push((key, self.expr()?));
            }
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(c) if c == close => {}
                Some(c) => {
                    return Err(
                        self.error(self.pos, &format!("expected `,` or `{close}`, found `{c}`"))
                    )
                }
                None => {
                    return Err(self.error(
                        start,
                        &format!("unclosed `{}`", &self.text[start..start + 1]),
                    ))
                }
            }
        }
        let kind = if close == ']' {
            ExprKind::List(items)
        } else {
            ExprKind::Map(pairs)
        };
        Ok(Expr {
            kind,
            span: self.span(start, self.pos),
        })
    }

    fn primary(&mut self) -> Result<Expr, SyntaxError> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            Some('"') => self.string_lit(),
            Some('[') => self.collection(']'),
            Some('{') => self.collection('}'),
            Some('(') => {
                self.pos += 1;
                let inner = self.expr()?;
                self.skip_ws();
                if self.peek() != Some(')') {
                    return Err(self.error(start, "unclosed `(`: expected `)`"));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(c) if c.is_ascii_digit() || c == '-' => {
                let mut end = self.pos + 1;
                while end < self.text.len() && matches!(self.text.as_bytes()[end], b'0'..=b'9' | b'.') {
                    end += 1;
                }
                let raw = &self.text[start..end];
                let n = raw.parse::<f64>().map_err(|_| self.error(start, &format!("`{raw}` is not a number")))?;
                self.pos = end;
                Ok(Expr { kind: ExprKind::Num(n), span: self.span(start, end) })
            }
            Some(c) if c.is_alphabetic() || c == '_' => {
                let first = self.ident();
                self.skip_ws();
                if self.peek() == Some('(') {
                    self.pos += 1;
                    let mut args = vec![];
                    self.skip_ws();
                    if self.peek() == Some(')') {
                        self.pos += 1;
                    } else {
                        loop {
                            args.push(self.expr()?);
                            self.skip_ws();
                            match self.peek() {
                                Some(',') => self.pos += 1,
                                Some(')') => {
                                    self.pos += 1;
                                    break;
                                }
                                Some(c) => {
                                    return Err(self.error(self.pos, &format!("expected `,` or `)` in call to `{first}`, found `{c}`")))
                                }
                                None => return Err(self.error(start, &format!("unclosed call to `{first}`: expected `)`"))),
                            }
                        }
                    }
                    return Ok(Expr { kind: ExprKind::Call(first, args), span: self.span(start, self.pos) });
                }
                if first == "true" || first == "false" {
                    return Ok(Expr { kind: ExprKind::Bool(first == "true"), span: self.span(start, self.pos) });
                }
                let mut path = vec![first];
                while self.peek() == Some('.') {
                    self.pos += 1;
                    match self.peek() {
                        Some(c) if c.is_alphanumeric() || c == '_' => path.push(self.ident()),
                        _ => return Err(self.error(self.pos, "expected a name after `.`")),
                    }
                }
                Ok(Expr { kind: ExprKind::Ref(path), span: self.span(start, self.pos) })
            }
            Some(c) => Err(self.error(start, &format!("unexpected `{c}` in `${{…}}`: expected a reference, a function call or a literal"))),
            None => Err(self.error(start.saturating_sub(1), "unclosed `${`: expected `}`")),
        }
    }

    fn ident(&mut self) -> String {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
        self.text[start..self.pos].to_string()
    }

    fn string_lit(&mut self) -> Result<Expr, SyntaxError> {
        let start = self.pos;
        self.pos += 1;
        let mut s = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error(start, "unclosed string literal in `${…}`")),
                Some('"') => {
                    self.pos += 1;
                    break;
                }
                Some('\\') => {
                    self.pos += 1;
                    let c = self
                        .peek()
                        .ok_or_else(|| self.error(start, "unclosed string literal in `${…}`"))?;
                    s.push(match c {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                    self.pos += c.len_utf8();
                }
                Some(c) => {
                    s.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
        Ok(Expr {
            kind: ExprKind::Str(s),
            span: self.span(start, self.pos),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Interpolated, SyntaxError> {
        parse(s, 0..s.len(), &|i| i)
    }

    #[test]
    fn literals_refs_and_calls() {
        let t = p("a-${var.x}-${upper(local.y, \"q\")}").unwrap();
        assert_eq!(t.parts.len(), 4);
        assert_eq!(t.refs().len(), 2);
        let Part::Expr(e) = &t.parts[1] else { panic!() };
        assert_eq!(e.kind, ExprKind::Ref(vec!["var".into(), "x".into()]));
        assert_eq!(e.span, 4..9);
    }

    #[test]
    fn dollar_dollar_is_literal() {
        let t = p("echo $${HOME}").unwrap();
        assert_eq!(t.as_literal().as_deref(), Some("echo ${HOME}"));
    }

    #[test]
    fn single_expression_keeps_its_type() {
        assert!(p("${var.list}").unwrap().single_expr().is_some());
        assert!(p("x${var.list}").unwrap().single_expr().is_none());
    }

    #[test]
    fn syntax_errors_point_at_the_problem() {
        assert_eq!(p("ab ${var.x").unwrap_err().span.start, 3);
        assert!(p("${}").unwrap_err().message.contains("empty"));
        let e = p("${var.x + 1}").unwrap_err();
        assert_eq!(e.span.start, 8);
        assert!(p("${upper(var.x}").is_err());
    }
}
