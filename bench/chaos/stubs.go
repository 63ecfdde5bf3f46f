package main

import (
	"context"
	"errors"
)

var errTODO = errors.New("not built yet")

func runR2(ctx context.Context, opt Options) (*Outcome, error)       { return nil, errTODO }
func runStop(ctx context.Context, opt Options) (*Outcome, error)     { return nil, errTODO }
func runDown(ctx context.Context, opt Options) (*Outcome, error)     { return nil, errTODO }
func runLease(ctx context.Context, opt Options) (*Outcome, error)    { return nil, errTODO }
func runReadOnly(ctx context.Context, opt Options) (*Outcome, error) { return nil, errTODO }
func runFull(ctx context.Context, opt Options) (*Outcome, error)     { return nil, errTODO }
func runSigterm(ctx context.Context, opt Options) (*Outcome, error)  { return nil, errTODO }
