// Package rules holds the event rules: what a uevent may load, beyond
// udev's default of loading its MODALIAS, and the allow-list that locks
// down what may load at all.
//
// # Files
//
// Every *.rules file of every directory (hidden files skipped) joins one list
// sorted by file name in byte order; a file in an earlier directory shadows a
// file of the same name in a later one, as systemd and udev do, so an empty
// file or a symlink to /dev/null masks it. A file named in
// EventRulesOptions.Paths is read whatever its name.
//
// # Lines
//
// One rule per line. Leading blanks (spaces, tabs) are ignored, and so is a
// carriage return before the newline. A line whose first non-blank character
// is '#' is a comment; comments stand on lines of their own (there are no
// trailing comments). A line ending in '\' continues on the next line: the
// backslash is removed and the next line, leading blanks stripped, is
// appended. As in udev, a comment line inside a continuation is skipped and
// does not continue itself, and a blank line ends the continuation.
//
// # Rules
//
// A rule is a list of clauses separated by commas; blanks around clauses and
// operators are ignored. Keys are upper case. Values are written in double
// quotes; a value is everything up to the next double quote, with no escape
// sequences and no variable substitution, so it cannot contain '"' (a glob's
// '?' can stand for it) nor control characters other than tab.
//
// Match clauses compare a field of the event with a shell glob (fnmatch
// without flags: '*', '?', '[...]', backslash escapes; '|' is an ordinary
// character, not udev's alternative):
//
//	KEY=="glob"     the field matches the glob
//	KEY!="glob"     the field does not match the glob
//
//	ACTION          the action of the event: add, remove, change, bind, ...
//	SUBSYSTEM       the SUBSYSTEM property
//	DEVPATH         the device path, below /sys
//	KERNEL          the device's kernel name: the last component of
//	                DEVPATH, '!' read as '/' (udev's KERNEL)
//	DRIVER          the DRIVER property
//	MODALIAS        the MODALIAS property, trailing newlines removed
//	ENV{NAME}       any property of the event (ENV{MODALIAS} is the raw value)
//
// A missing property is the empty string, as in udev: ENV{X}=="" matches
// when X is missing or empty, ENV{X}=="?*" means "X is present and not
// empty", and ENV{X}!="?*" means "X is missing or empty".
//
// Action clauses say what the rule does:
//
//	LOAD="NAME ..."  load these modules or aliases too (blank-separated),
//	                 e.g. for a device without a MODALIAS
//	SKIP             do not load the event's MODALIAS
//	LOAD_MODALIAS    load the event's MODALIAS, even after a SKIP and for
//	                 any action, not only "add"
//
// Every rule needs at least one action clause; it may have no match clause,
// and then applies to every event.
//
// # Module events
//
// The kernel sends add@/module/NAME when a module has gone live and
// remove@/module/NAME when it is unloaded: SUBSYSTEM is "module", DEVPATH
// "/module/NAME", KERNEL the module's name, and there is no MODALIAS. They
// reach the rules like device events, so a module can load another, as
// udev's 80-drivers.rules does for parallel ports:
//
//	ACTION=="add", SUBSYSTEM=="module", KERNEL=="parport_pc", LOAD="ppdev"
//
// A rule with no SUBSYSTEM clause sees module events too. The daemon first
// notes that the module is live, then applies the rules; their loads wait
// their turn like any other, and a module already live or loading is not
// loaded again, so rules that load a module from its own event, or two
// modules from each other's, end. Coldplug and a resync after lost events
// apply the rules to an add for every module in /sys/module, as udev's
// coldplug does, built-in modules with parameters included.
//
// # Allow-list
//
// A line of its own
//
//	ALLOW="pattern ..."
//
// turns on allow-list mode for the whole rule set: only a module whose name
// matches one of the patterns of all ALLOW lines of all files may load; the
// daemon refuses every other one, dependencies included. Patterns are globs
// matched against module names, with '-' read as '_' in both (outside
// [...]), so ALLOW="snd-*" allows snd_hda_intel. Without any ALLOW line every
// module is allowed.
//
// # Evaluation
//
// Decide evaluates the rules in order (files by name, lines in file order).
// Every rule whose match clauses all match applies its actions in the order
// written: LOAD adds its names (each name once, in order of first mention),
// SKIP and LOAD_MODALIAS set the MODALIAS decision, the last one wins. Before
// any rule, the decision is udev's (80-drivers.rules): load the MODALIAS when
// ACTION is "add" and MODALIAS is not empty. The special cases of that udev
// file, devices without a MODALIAS, are rules to write, for example:
//
//	ACTION=="add", SUBSYSTEM=="memstick", LOAD="ms_block mspro_block"
//	ACTION=="add", SUBSYSTEM=="tifm", ENV{TIFM_CARD_TYPE}=="SD", LOAD="tifm_sd"
//
// # Errors and fail-safe behaviour
//
// A line that is not valid is reported in Problems as "file:line: reason"
// (a *ParseError naming the first line of a continued line) and skipped as a
// whole; the rest of the file still applies. Unknown keys or actions,
// operators other than those above ("=" to match, "+=", ":="), a missing or
// unterminated quote, a value on SKIP or LOAD_MODALIAS, ENV without {NAME},
// an empty clause, a rule with no action, an empty LOAD or ALLOW list, an
// ALLOW clause in a rule, a glob with an unbalanced '[' or ']' in ALLOW, a
// line longer than MaxEventRuleLine and a backslash continuing the last line
// are all errors. Rules and ALLOW lines of a file past the first
// MaxEventRulesPerFile are ignored, with one problem; the first 100 problems
// of a file are recorded, then one that counts the rest.
//
// Skipping never widens the allow-list. Allow-list mode is turned on, with
// nothing allowed by what was skipped, by:
//
//   - a skipped line that names ALLOW. An ALLOW word is one beginning with
//     "allow" in any case (ALLOW, allow, ALLOWED, ALLOW_LIST) and not
//     preceded by a letter, digit, '_', '{' or '$'; a line names ALLOW when
//     an ALLOW word starts the line, follows a comma (blanks between them
//     allowed), or is followed, after optional blanks, by an operator
//     character (=!+-:<>~), a comma or the end of the line. So an ALLOW
//     line with a typo in one pattern allows none of its patterns, and
//     ALLOW="" allows nothing, while a stray "allow" in a value or in a
//     trailing comment (itself an error) is not taken for one.
//   - a line naming ALLOW beyond MaxEventRulesPerFile.
//
// Problems of this kind end in "(allow-list mode on)". A rule file or
// directory that exists but cannot be read in full (an I/O or permission
// error, a dangling symlink, a directory or other non-regular file where a
// *.rules file should be, a file larger than MaxEventRuleFileSize) is
// reported and still shadows files of its name in later directories, as
// the file it stands for would; it does not turn allow-list mode on, since
// a broken rule file must never stop the defaults. Where the allow-list
// is on from other files, it stays on: an unreadable file never widens it.
// A path given in EventRulesOptions.Paths that does not exist is only
// reported. Otherwise a skipped line only does not apply: the decisions of
// Decide fall back to the other rules and the default.
package rules
