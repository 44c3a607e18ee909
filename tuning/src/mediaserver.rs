//! The media server's configuration: where recordings go, which users the
//! media server answers itself (conference rooms, IVR menus, the echo
//! test), music on hold, and announcements instead of bare failures.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// `[recording]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RecordingConfig {
    /// Where `<call-id>.wav` and `<call-id>.json` are written (relative to
    /// the configuration file); none: recording is refused.
    pub dir: Option<PathBuf>,
}

/// What an IVR digit does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IvrAction {
    /// The caller joins a conference room.
    Room(String),
    /// The caller hears itself.
    Echo,
    /// The caller hears a prompt (then the menu again).
    Play(PathBuf),
    /// The call ends.
    Hangup,
    /// The caller is sent to a URI (REFER, RFC 3515).
    Transfer(String),
}

impl IvrAction {
    /// Reads `room:NAME`, `echo`, `play:FILE`, `hangup`, `transfer:URI`.
    pub fn parse(s: &str) -> Result<IvrAction, String> {
        let s = s.trim();
        match s.split_once(':') {
            Some(("room", r)) if !r.is_empty() => Ok(IvrAction::Room(r.to_owned())),
            Some(("play", f)) if !f.is_empty() => Ok(IvrAction::Play(PathBuf::from(f))),
            Some(("transfer", u)) if u.starts_with("sip:") || u.starts_with("sips:") => {
                Ok(IvrAction::Transfer(u.to_owned()))
            }
            None if s == "echo" => Ok(IvrAction::Echo),
            None if s == "hangup" => Ok(IvrAction::Hangup),
            _ => Err(format!(
                "{s:?} is not an action (room:NAME, echo, play:FILE, hangup, transfer:sip:URI)"
            )),
        }
    }
}

/// `[[mediaserver.ivr]]`: one menu.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IvrMenu {
    /// The user part that reaches it (`sip:ivr@<domain>`).
    pub user: String,
    /// The prompt, played in a loop until a digit (relative to the prompt
    /// directory).
    pub prompt: PathBuf,
    /// Seconds without a valid digit before the prompt starts over.
    #[serde(default = "default_ivr_timeout")]
    pub timeout_secs: u32,
    /// Times it starts over before hanging up.
    #[serde(default = "default_ivr_retries")]
    pub retries: u32,
    /// Digit → action (`room:NAME`, `echo`, `play:FILE`, `hangup`,
    /// `transfer:sip:URI`).
    #[serde(default)]
    pub digits: BTreeMap<String, String>,
}

fn default_ivr_timeout() -> u32 {
    20
}

fn default_ivr_retries() -> u32 {
    3
}

impl IvrMenu {
    /// The action of `digit` (`0`-`9`, `*`, `#`, `A`-`D`).
    pub fn action(&self, digit: char) -> Option<IvrAction> {
        let key = digit.to_string();
        self.digits.get(&key).and_then(|a| IvrAction::parse(a).ok())
    }
}

/// `[mediaserver]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaServerConfig {
    /// Calls to `<prefix><room>@<served domain>` join conference room
    /// `<prefix><room>`; empty: no conferences.
    #[serde(default)]
    pub conference_prefix: String,
    /// The user that reaches the echo test; empty: none.
    #[serde(default)]
    pub echo: String,
    /// Where prompts are read from (relative to the configuration file).
    #[serde(default = "default_prompt_dir")]
    pub prompt_dir: PathBuf,
    /// Played to a party its peer holds (sendonly/inactive); none: silence.
    pub music_on_hold: Option<PathBuf>,
    /// IVR menus.
    #[serde(default)]
    pub ivr: Vec<IvrMenu>,
    /// Final failure status → prompt the caller hears before the call is
    /// released with that status (e.g. 486 = "busy.wav").
    #[serde(default)]
    pub announcements: BTreeMap<String, PathBuf>,
    /// Opus encoder complexity (0–10) of what the media server itself
    /// sends (room mixes, echo); `[media.opus]` sets the rest. Most of a
    /// room's cost is its Opus encoders (`benches/RESULTS.md`).
    #[serde(default = "default_opus_complexity")]
    pub opus_complexity: u8,
    /// Each conference room is recorded while it has members, to
    /// `[recording] dir` as `room-<name>-<unix seconds>.wav` (mono, 16 kHz:
    /// every talker) and `.json`.
    #[serde(default)]
    pub record_rooms: bool,
}

fn default_opus_complexity() -> u8 {
    1
}

fn default_prompt_dir() -> PathBuf {
    PathBuf::from("../prompts")
}

impl Default for MediaServerConfig {
    fn default() -> Self {
        MediaServerConfig {
            conference_prefix: String::new(),
            echo: String::new(),
            prompt_dir: default_prompt_dir(),
            music_on_hold: None,
            ivr: Vec::new(),
            announcements: BTreeMap::new(),
            opus_complexity: default_opus_complexity(),
            record_rooms: false,
        }
    }
}

impl MediaServerConfig {
    /// Checks menus and announcements; the key and the problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.opus_complexity > 10 {
            return Err((
                "mediaserver.opus_complexity".into(),
                format!("{} is not 0-10", self.opus_complexity),
            ));
        }
        for (i, m) in self.ivr.iter().enumerate() {
            if m.user.is_empty() {
                return Err((format!("mediaserver.ivr[{i}].user"), "empty".into()));
            }
            for (d, a) in &m.digits {
                let ok = d.chars().count() == 1
                    && d.chars()
                        .all(|c| c.is_ascii_digit() || "*#ABCD".contains(c));
                if !ok {
                    return Err((
                        format!("mediaserver.ivr[{i}].digits"),
                        format!("{d:?} is not one DTMF digit"),
                    ));
                }
                IvrAction::parse(a).map_err(|e| (format!("mediaserver.ivr[{i}].digits"), e))?;
            }
        }
        for code in self.announcements.keys() {
            match code.parse::<u16>() {
                Ok(c) if (300..700).contains(&c) => {}
                _ => {
                    return Err((
                        "mediaserver.announcements".into(),
                        format!("{code:?} is not a final failure status (300-699)"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether the media server answers any user.
    pub fn answers_calls(&self) -> bool {
        !self.conference_prefix.is_empty() || !self.echo.is_empty() || !self.ivr.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_read_as_written_and_mistakes_are_named() {
        assert_eq!(
            IvrAction::parse("room:conf-1"),
            Ok(IvrAction::Room("conf-1".into()))
        );
        assert_eq!(IvrAction::parse("echo"), Ok(IvrAction::Echo));
        assert_eq!(IvrAction::parse("hangup"), Ok(IvrAction::Hangup));
        assert_eq!(
            IvrAction::parse("transfer:sip:100@rvoip.test"),
            Ok(IvrAction::Transfer("sip:100@rvoip.test".into()))
        );
        assert!(IvrAction::parse("dance").is_err());
        assert!(IvrAction::parse("room:").is_err());
        let mut m = MediaServerConfig::default();
        m.ivr.push(IvrMenu {
            user: "ivr".into(),
            prompt: "welcome.wav".into(),
            timeout_secs: 5,
            retries: 1,
            digits: [("12".to_string(), "echo".to_string())]
                .into_iter()
                .collect(),
        });
        assert!(m.validate().is_err());
        m.ivr[0].digits = [("1".to_string(), "room:conf-1".to_string())]
            .into_iter()
            .collect();
        assert!(m.validate().is_ok());
        assert_eq!(m.ivr[0].action('1'), Some(IvrAction::Room("conf-1".into())));
        m.announcements.insert("200".into(), "x.wav".into());
        assert!(m.validate().is_err());
    }
}
