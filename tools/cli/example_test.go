package cli_test

import (
	"context"
	"fmt"
	"os"

	"github.com/twinslot/twinslot/tools/cli"
)

func ExampleRun() {
	cmds := []cli.Command{{
		Name:    "greet",
		Summary: "say hello",
		Run: func(ctx context.Context, stdio cli.IO, args []string) error {
			fs := stdio.FlagSet("hello greet", "[--loud] NAME", "Greets NAME.")
			loud := fs.Bool("loud", false, "shout")
			pos, err := cli.Parse(fs, args)
			if err != nil {
				return err
			}
			if err := cli.NArgs(pos, 1, 1, "NAME"); err != nil {
				return err
			}
			if *loud {
				fmt.Fprintf(stdio.Stdout, "HELLO, %s!\n", pos[0])
				return nil
			}
			fmt.Fprintf(stdio.Stdout, "hello, %s\n", pos[0])
			return nil
		},
	}}
	code := cli.Run(context.Background(), "hello", "an example", cmds, []string{"greet", "world", "--loud"},
		cli.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stdout})
	fmt.Println("exit", code)
	// Output:
	// HELLO, world!
	// exit 0
}
