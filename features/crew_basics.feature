Feature: A crew works through its tasks in order
  A crew's tasks run one after another. Each task is answered by its agent's model, sees the
  outputs it is meant to see, and may call the agent's tools. Every prompt is read back from
  what the fake server actually received.

  Scenario: Each task of a sequential crew sees the outputs of the tasks before it
    Given one agent with the tasks "research", "outline" and "write", in that order
    When the crew is kicked off
    Then the crew's output is the output of "write"
    And the prompt of "outline" holds the output of "research"
    And the prompt of "write" holds the outputs of "research" and "outline"
    And the prompt of "research" holds no earlier output

  Scenario: A task with context sees exactly the tasks it names
    Given one agent with the tasks "research", "outline" and "write", in that order
    And "write" names only "research" as its context
    When the crew is kicked off
    Then the prompt of "write" holds the output of "research"
    But the prompt of "write" does not hold the output of "outline"

  Scenario: A missing input names the placeholder and the task, and nothing is sent
    Given a task "summary" that says "Summarise {topic} for {audience}"
    When the crew is kicked off with topic "octopuses"
    Then the kickoff fails with an InputError
    And the error names the placeholder "audience" and "task 'summary' description"
    And the server was sent no request

  Scenario: A missing input in an agent's role names the placeholder and the agent
    Given an agent whose role is "Expert on {field}" and a task "summary" that says "Summarise {topic}"
    When the crew is kicked off with topic "octopuses"
    Then the kickoff fails with an InputError
    And the error names the placeholder "field" and "agent 'Expert on {field}' role"
    And the server was sent no request

  Scenario: JSON braces in a description are left exactly as written
    Given a task "shape" that says:
      """
      Describe {topic} as {"name": "...", "legs": 8, "tags": [{}, { }, {0}]} please
      """
    When the crew is kicked off with topic "squid"
    Then the prompt of "shape" holds:
      """
      Describe squid as {"name": "...", "legs": 8, "tags": [{}, { }, {0}]} please
      """

  Scenario: The model asks for a tool, the tool runs, and its result goes back to the model
    Given an agent with a tool "lookup" that answers "octopuses have three hearts"
    And the model answers "facts" by calling "lookup" with topic "octopus", then with "Three hearts."
    When the crew is kicked off
    Then "lookup" ran once, with topic "octopus"
    And the model's second request for "facts" carries the tool result "octopuses have three hearts"
    And the output of "facts" is "Three hearts."
    And the usage of "facts" equals the server's count for it, 2 requests

  Scenario: An unknown tool name is fed back to the model as an error
    Given an agent with a tool "lookup" that answers "octopuses have three hearts"
    And the model answers "facts" by calling "encyclopedia" with topic "octopus", then with "I could not look it up."
    When the crew is kicked off
    Then "lookup" never ran
    And the model's second request for "facts" carries the tool result "Error: unknown tool 'encyclopedia'; available tools: lookup"
    And the output of "facts" is "I could not look it up."
    And the usage of "facts" equals the server's count for it, 2 requests

  Scenario: A tool that raises is fed back to the model, and the task goes on
    Given an agent with a tool "lookup" that raises ValueError "the archive is closed"
    And the model answers "facts" by calling "lookup" with topic "octopus", then with "The archive was closed."
    When the crew is kicked off
    Then "lookup" ran once, with topic "octopus"
    And the model's second request for "facts" carries the tool result "Error: tool 'lookup' raised ValueError: the archive is closed"
    And the output of "facts" is "The archive was closed."
    And the usage of "facts" equals the server's count for it, 2 requests

  Scenario: An agent that never stops calling tools fails after max_iter turns, with what it spent
    Given an agent with a tool "lookup" that answers "there is more to read", allowed 3 turns
    And the model answers "facts" by calling "lookup" with topic "octopus" every time
    When the crew is kicked off
    Then the kickoff fails with a MaxIterationsError naming the agent, the task and max_iter=3
    And the error's usage equals the server's count, 3 requests
