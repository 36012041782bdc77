package main

import (
	"context"
	"errors"
	"io"
)

func dev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("dev: not implemented yet")
}
