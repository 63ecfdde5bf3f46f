// Package archtest holds no code: its tests lock the architecture the rest
// of the tree relies on, reading the packages with the go tool.
//
//   - The SDK packages (worker, worker/builtin, client, tokens) are
//     importable from another module: no exported signature, field,
//     embedded type or constant of theirs mentions a package under
//     internal/ (TestPublicAPIHasNoInternalTypes).
//   - Dependencies point one way (TestImportLayering): nothing under
//     internal/ imports a claimcheck package outside internal/, and app,
//     the wiring at the top, is imported only by commands and by app's
//     own subpackages.
package archtest
