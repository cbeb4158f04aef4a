//! The `init` and `bias_init` keys of a layer, a block or the model: a scheme's name
//! (`init = "kaiming_normal"`, PyTorch's default parameters) or an inline table with its
//! parameters by PyTorch's names (`init = { scheme = "kaiming_normal", mode = "fan_out",
//! nonlinearity = "relu" }`). Unknown schemes and parameters, values of the wrong type or
//! range, and schemes that do not fit the layer are located errors naming the layer and the key.

use super::keys::{Parser, Span};
use super::suggest::closest;
use crate::init::{FanMode, Init, InitTargets, LayerInit, Nonlinearity, fit};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// The keys read here.
pub const INIT_KEYS: [&str; 2] = ["init", "bias_init"];

impl Parser<'_> {
    /// The `init` and `bias_init` of table `t`, for `whom` (`layer `fc1``, `block `enc``, `the
    /// model`). `own`: the layer's own choice, checked against its `targets`; otherwise a block's
    /// or the model's, which its layers inherit where it fits.
    pub(crate) fn layer_init(&mut self, t: &DeTable, whom: &str, targets: Option<InitTargets>, own: bool) -> LayerInit {
        let mut init = LayerInit::default();
        let mut spans: Vec<(&str, Span)> = vec![];
        for key in INIT_KEYS {
            let Some(v) = t.get(key) else { continue };
            let scheme = self.scheme(v, key, whom);
            if key == "init" {
                init.weight = scheme;
            } else {
                init.bias = scheme;
            }
            spans.push((key, v.span()));
        }
        if let Err(m) = fit(&init, targets, own) {
            let span = spans.iter().find(|(k, _)| *k == m.key).map(|(_, s)| s.clone()).unwrap_or_default();
            self.error(span, format!("`{}` of {whom}: {}", m.key, m.message), Some(m.help));
            return LayerInit::default();
        }
        init
    }

    /// One scheme: a name or a table with `scheme` and parameters.
    fn scheme(&mut self, v: &Spanned<DeValue>, key: &str, whom: &str) -> Option<Init> {
        let schemes = format!("`{key}` takes one of: {}", Init::SCHEMES.join(", "));
        match v.get_ref() {
            DeValue::String(name) => {
                if name.as_ref() == "constant" {
                    let help = format!("give its value: {key} = {{ scheme = \"constant\", val = 0.1 }}");
                    self.error(v.span(), format!("`{key}` of {whom}: constant needs `val`"), Some(help));
                    return None;
                }
                self.scheme_name(name, v.span(), key, whom, &schemes)?;
                Init::from_name(name)
            }
            DeValue::Table(t) => self.scheme_table(t, v.span(), key, whom, &schemes),
            other => {
                let message = format!(
                    "`{key}` of {whom} must be a scheme such as \"kaiming_normal\" or a table such as \
                     {{ scheme = \"normal\", std = 0.02 }}, found {}",
                    other.type_str()
                );
                self.error(v.span(), message, Some(schemes));
                None
            }
        }
    }

    /// Checks that `name` is a scheme, reporting it with a "did you mean" otherwise.
    fn scheme_name(&mut self, name: &str, span: Span, key: &str, whom: &str, schemes: &str) -> Option<()> {
        if Init::SCHEMES.contains(&name) {
            return Some(());
        }
        let help = match closest(name, &Init::SCHEMES) {
            Some(c) => format!("did you mean `{c}`? {schemes}"),
            None => schemes.to_string(),
        };
        self.error(span, format!("unknown init scheme `{name}` in `{key}` of {whom}"), Some(help));
        None
    }

    fn scheme_table(&mut self, t: &DeTable, span: Span, key: &str, whom: &str, schemes: &str) -> Option<Init> {
        let name = match t.get("scheme").map(|s| (s.get_ref(), s.span())) {
            Some((DeValue::String(n), s)) => {
                self.scheme_name(n, s, key, whom, schemes)?;
                n.to_string()
            }
            Some((other, s)) => {
                let message = format!("`scheme` of `{key}` of {whom} must be a string, found {}", other.type_str());
                self.error(s, message, Some(schemes.to_string()));
                return None;
            }
            None => {
                let help = format!("add scheme = \"...\"; {schemes}");
                self.error(span, format!("`{key}` of {whom} has no `scheme`"), Some(help));
                return None;
            }
        };
        let params = Init::params_of(&name);
        let mut ok = true;
        for (k, _) in t.iter() {
            let p = k.get_ref().as_ref();
            if p != "scheme" && !params.contains(&p) {
                let takes = if params.is_empty() {
                    format!("{name} takes no parameters")
                } else {
                    format!("{name} takes: {}", params.join(", "))
                };
                let help = match closest(p, params) {
                    Some(c) => format!("did you mean `{c}`? {takes}"),
                    None => takes,
                };
                self.error(k.span(), format!("unknown parameter `{p}` of {name} in `{key}` of {whom}"), Some(help));
                ok = false;
            }
        }
        let cx = Context { table: t, key, whom };
        let init = match name.as_str() {
            "uniform" => Init::Uniform { a: self.number(&cx, "a", 0.0)?, b: self.number(&cx, "b", 1.0)? },
            "normal" => Init::Normal { mean: self.number(&cx, "mean", 0.0)?, std: self.number(&cx, "std", 1.0)? },
            "trunc_normal" => Init::TruncNormal {
                mean: self.number(&cx, "mean", 0.0)?,
                std: self.number(&cx, "std", 1.0)?,
                a: self.number(&cx, "a", -2.0)?,
                b: self.number(&cx, "b", 2.0)?,
            },
            "constant" => {
                if t.get("val").is_none() {
                    let help = format!("give its value: {key} = {{ scheme = \"constant\", val = 0.1 }}");
                    self.error(span, format!("`{key}` of {whom}: constant needs `val`"), Some(help));
                    return None;
                }
                Init::Constant { val: self.number(&cx, "val", 0.0)? }
            }
            "zeros" => Init::Zeros,
            "ones" => Init::Ones,
            "xavier_uniform" => Init::XavierUniform { gain: self.number(&cx, "gain", 1.0)? },
            "xavier_normal" => Init::XavierNormal { gain: self.number(&cx, "gain", 1.0)? },
            "orthogonal" => Init::Orthogonal { gain: self.number(&cx, "gain", 1.0)? },
            kaiming => {
                let a = self.number(&cx, "a", 0.0);
                let mode = self.word(&cx, "mode", FanMode::FanIn, FanMode::from_name, &["fan_in", "fan_out"]);
                let names: Vec<&str> = Nonlinearity::ALL.iter().map(|n| n.as_str()).collect();
                let nonlinearity =
                    self.word(&cx, "nonlinearity", Nonlinearity::LeakyRelu, Nonlinearity::from_name, &names);
                let (a, mode, nonlinearity) = (a?, mode?, nonlinearity?);
                if kaiming == "kaiming_uniform" {
                    Init::KaimingUniform { a, mode, nonlinearity }
                } else {
                    Init::KaimingNormal { a, mode, nonlinearity }
                }
            }
        };
        if let Err(p) = init.check() {
            let at = t.get(p.param).map_or(span, |v| v.span());
            self.error(at, format!("`{key}` of {whom}: {}", p.message()), None);
            return None;
        }
        ok.then_some(init)
    }

    /// A number parameter (float or integer) with PyTorch's default.
    fn number(&mut self, cx: &Context<'_, '_>, param: &str, default: f64) -> Option<f64> {
        let Some(v) = cx.table.get(param) else { return Some(default) };
        let value = match v.get_ref() {
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok().filter(|x| x.is_finite()),
            DeValue::Integer(_) => self.int(v, param).map(|i| i as f64),
            _ => None,
        };
        if value.is_none() {
            let found = v.get_ref().type_str();
            let (key, whom) = (cx.key, cx.whom);
            self.error(
                v.span(),
                format!("`{param}` of `{key}` of {whom} must be a finite number, found {found}"),
                None,
            );
        }
        value
    }

    /// A string parameter that names one of `names`.
    fn word<T>(
        &mut self,
        cx: &Context<'_, '_>,
        param: &str,
        default: T,
        parse: fn(&str) -> Option<T>,
        names: &[&str],
    ) -> Option<T> {
        let Some(v) = cx.table.get(param) else { return Some(default) };
        if let DeValue::String(s) = v.get_ref()
            && let Some(x) = parse(s)
        {
            return Some(x);
        }
        let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
        let (key, whom) = (cx.key, cx.whom);
        let help = match v.get_ref() {
            DeValue::String(s) => closest(s, names).map(|c| format!("did you mean \"{c}\"?")),
            _ => None,
        };
        self.error(v.span(), format!("`{param}` of `{key}` of {whom} must be one of {}", quoted.join(", ")), help);
        None
    }
}

/// Where a scheme's parameters are read from, and for whom (for messages).
struct Context<'t, 'w> {
    table: &'t DeTable<'t>,
    key: &'w str,
    whom: &'w str,
}
