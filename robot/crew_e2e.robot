*** Settings ***
Documentation     A crew with tools and context runs through litellm's real HTTP path against
...               the fake server, started by the suite as a separate process. Every figure
...               crewline reports (per crew, per task, per agent, and the cost) equals the
...               server's own count of what it served.
Resource          crewline.resource
Test Setup        Start Fake Server    tools=True
Test Teardown     Stop Fake Server


*** Test Cases ***
A Crew With Tools And Context Reports Exactly What The Server Served
    ${out}=    Run Research Crew    kickoff    e2e
    ${served}=    Server Totals
    Should Be Equal As Integers    ${served}[requests]    8
    ...    msg=four tasks, each one tool call and one answer
    Usage Should Equal Served    ${out}[usage]    ${served}    the crew
    Each Task Should Report The Server's Count For Its Marker    ${out}    e2e
    ${tools}=    Evaluate    [name for name, thread in $out["tool_calls"]]
    Should Be Equal    ${tools}    ${{["lookup", "lookup", "word_count", "word_count"]}}
    Should Be Equal    ${out}[record_runs]    ${{[$out["run_id"]]}}

The Cost Is The Server's Tokens At The Model's Listed Price
    ${out}=    Run Research Crew    kickoff    cost
    ${served}=    Server Totals
    ${expected}=    Price Table Cost    ${served}    openai/gpt-4o-mini
    Amount Should Be More Than    ${expected}    0
    Amounts Should Be Equal    ${out}[cost]    ${expected}

Each Agent Is Charged For Its Own Tasks Only
    ${out}=    Run Research Crew    kickoff    agents
    ${researcher}=    Server Totals    agents-anatomy    agents-habits
    ${writer}=    Server Totals    agents-write    agents-review
    Usage Should Equal Served    ${out}[agents][Researcher]    ${researcher}    the Researcher
    Usage Should Equal Served    ${out}[agents][Writer]    ${writer}    the Writer

A Second Kickoff Reports Only Its Own Usage
    ${first}=    Run Research Crew    kickoff    first    topic=octopuses
    ${second}=    Run Research Crew    kickoff    second    topic=giant pacific octopuses
    ${served first}=    Server Totals    first-anatomy    first-habits    first-write    first-review
    ${served second}=    Server Totals    second-anatomy    second-habits    second-write    second-review
    Usage Should Equal Served    ${first}[usage]    ${served first}    the first kickoff
    Usage Should Equal Served    ${second}[usage]    ${served second}    the second kickoff
    ${everything}=    Server Totals
    Should Not Be Equal As Integers    ${second}[usage][total_tokens]    ${everything}[total_tokens]
    ...    msg=the control: a lifetime counter would report both kickoffs as the second one's
